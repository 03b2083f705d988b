"""What ADLM's discriminator reads: the text, or the attribute embedding it is given (a helper of detox.py).

    python benchmarks/detox_discriminator.py adlm-gpt2-tiny-toxic --sentences 300

Takes the validation sentences of the artifact's own training data (its card's
``data`` and seed), projects each with no attribute embedding (the label-free
projection the discriminator is trained on), under its gold attribute, the
swapped one, and always the non-toxic / toxic one, and prints one JSON object:
for each case the discriminator's accuracy against the sentence's label and
(for the conditioned cases) how often it predicts the attribute it was given.

Reading it: the label-free accuracy is what D learned from the text. On the
conditioned projections D should follow the given attribute: that is the
steering the objective trains (the non-toxic-conditioned projection of any
sentence reads non-toxic). With the first objective D was trained on the gold
conditioned projection, so following the given attribute there meant D read
the label instead of the text; the label-free row tells the two apart.
"""

from __future__ import annotations

import argparse
import json

import torch


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("ref")
    parser.add_argument("--sentences", type=int, default=300)
    args = parser.parse_args()
    from mltk.core.registry import Registry
    from mltk.data.text.tokens import encode_sentences
    from mltk.engines.detox.adlm import pooled
    from mltk.engines.detox.adlm_recipe import AdlmObjective
    from mltk.engines.detox.config import AdlmSpec, TextData
    from mltk.engines.detox.methods import load_method
    from mltk.engines.detox.training import read_text_data

    registry = Registry()
    method = load_method(args.ref, registry=registry)
    card = registry.resolve(args.ref).card()
    config = card["config"]
    data_spec = TextData(**{k: v for k, v in config["data"].items() if k in TextData.__dataclass_fields__})
    _, val = read_text_data(data_spec, seed=config.get("seed", 0), labelled=True, what="probe")
    val = val[:args.sentences]
    data = encode_sentences(method.tokenizer, val, seq_len=config["train"]["seq_len"])
    spec = AdlmSpec(**{k: v for k, v in config["adlm"].items() if k in AdlmSpec.__dataclass_fields__})
    head = method.added[0]
    objective = AdlmObjective(method.lm.model, head, spec=spec, fisher={})
    labels = data.labels
    out = {"sentences": len(val), "toxic": int(labels.sum())}
    cases = {"label_free": None, "gold": labels, "swapped": 1 - labels, "always_nontoxic": torch.zeros_like(labels),
             "always_toxic": torch.ones_like(labels)}
    with torch.no_grad():
        for name, attributes in cases.items():
            latent = objective.latent(data.ids, attributes)
            predicted = head.discriminator(pooled(latent, data.mask, pool=spec.pool)).argmax(1)
            out[name] = {"accuracy": float((predicted == labels).float().mean())}
            if attributes is None:  # per-class recall, averaged: the classes are unbalanced
                recalls = [float((predicted[labels == c] == c).float().mean()) for c in (0, 1) if (labels == c).any()]
                out[name]["balanced_accuracy"] = sum(recalls) / len(recalls)
            if attributes is not None:
                out[name]["follows_given_attribute"] = float((predicted == attributes).float().mean())
    print(json.dumps(out))


if __name__ == "__main__":
    main()
