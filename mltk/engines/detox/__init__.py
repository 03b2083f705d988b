"""Language detoxification (``detox`` engine): ADLM over a frozen causal LM, with DAPT and DExperts baselines.

Recipes (``mltk train ...``): ``lm`` (an offline GPT-2-architecture base LM),
``adlm``, ``dapt``, ``dexperts`` and ``toxicity-scorer`` (the offline judge).
Protocol: ``mltk eval REF --protocol toxicity``. Generation:
``mltk detox-generate REF`` or, from Python::

    from mltk.engines.detox import Sampling, generate, load_method
    method = load_method("adlm-gpt2-tiny")
    [out] = generate(method.decoder, method.tokenizer, ["The men started"], n=5,
                     sampling=Sampling(max_new_tokens=20), seed=0, device=torch.device("cpu"),
                     context=method.context)

What follows the paper and what is our interpretation. ADLM (arXiv
2210.10329, ACL 2023) could be read only through its abstract and a review of
its Figure 3: a projection block on top of a frozen LM, attribute embeddings,
an attribute discriminator, an EWC term, and two logits at inference of which
the toxic one is suppressed. The rest is ours (mltk research brief B, section
3): the block is one GPT-2 block initialised from the LM's last block and run
on that block's input; the attribute embedding is added to every position;
the discriminator is linear on the mean-pooled, final-normed projected states
and is trained only on the projection with no attribute embedding (so it reads
the text), while a steering term with the discriminator frozen moves each
sentence's non-toxic / toxic projection to that side of it; the EWC Fisher is the diagonal Fisher
of the LM's last block on the training text, normalised to mean 1; the
decoding rule is ``logits_LM + alpha * (logits_nontoxic - logits_toxic)``
(``adlm.combine=base``; ``projected`` anchors on the non-toxic logits
instead); and the loss weights are configuration values, not the paper's.
"""

from mltk.engines.detox import (  # noqa: F401  (each registers its recipe or protocol)
    adlm_recipe,
    dapt_recipe,
    dexperts_recipe,
    lm_recipe,
    protocols,
    scorer_recipe,
)
from mltk.engines.detox.generation import Sampling, generate
from mltk.engines.detox.methods import DetoxMethod, load_method

__all__ = ["DetoxMethod", "Sampling", "generate", "load_method"]
