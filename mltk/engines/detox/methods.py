"""Any detox reference, loaded as a ready-to-sample method: ``base``, ``dapt``, ``dexperts`` or ``adlm``.

``load_method(REF)`` reads what REF is and picks its natural method:

* a ``causal-lm`` artifact, a Hugging Face folder or ``hf:NAME``: ``base``
  (``dapt`` when the artifact was made by ``mltk train dapt``);
* an ``adlm`` artifact: ``adlm``, over the LM its card names;
* a ``dexperts`` artifact: ``dexperts``, over the LM its card names.

``method="base"`` on an adlm or dexperts artifact samples its LM alone, for
side-by-side comparisons. The LM an add-on names must be the one it was
trained on (a fingerprint of its weights is checked); ``lm=`` points at
another copy of it when the recorded reference does not exist here.
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Callable
from pathlib import Path

import torch

from mltk.core.artifact import open_artifact
from mltk.core.errors import ArtifactError, UsageError
from mltk.core.registry import Registry
from mltk.core.tensor_files import load_safetensors
from mltk.engines.detox.adlm import AdlmHead, check_head_fits
from mltk.engines.detox.adlm_recipe import ADLM_KIND, HEAD_FILE
from mltk.engines.detox.dexperts_recipe import ANTIEXPERT_FILE, DEXPERTS_KIND, EXPERT_FILE
from mltk.engines.detox.generation import AdlmDecoder, ContrastDecoder, Decoder, LMDecoder
from mltk.nn.artifacts import build_for_weights, load_weights_exactly
from mltk.nn.language_models.causal_lm import (
    HUB_PREFIX,
    LoadedLM,
    lm_fingerprint,
    load_causal_lm,
)
from mltk.nn.language_models.causal_lm import KIND as LM_KIND

METHODS = ("base", "dapt", "dexperts", "adlm")
FOREIGN_WEIGHTS_HINT = "the artifact belongs to another LM or was damaged; `mltk verify` checks it"


@dataclasses.dataclass
class DetoxMethod:
    """A loaded method: make decoders, know its LM, its added weights and its decoding defaults."""

    name: str
    reference: str  # what was loaded
    lm: LoadedLM  # the LM sampled from (the base for adlm/dexperts, the adapted LM for dapt)
    added: list[torch.nn.Module]  # weights the method adds to the LM at decoding
    decoding: dict  # alpha, combine, filter_p defaults from the artifact
    _make: Callable[..., Decoder]

    @property
    def tokenizer(self):
        return self.lm.tokenizer

    @property
    def context(self) -> int:
        config = self.lm.model.config
        return int(getattr(config, "n_positions", None) or getattr(config, "max_position_embeddings", 1024))

    @property
    def added_parameters(self) -> int:
        return sum(p.numel() for m in self.added for p in m.parameters())

    def weight_bytes(self) -> int:
        """Bytes of every weight decoding reads: the LM's and the added ones."""
        modules = [self.lm.model, *self.added]
        return sum(p.numel() * p.element_size() for m in modules for p in m.parameters())

    def decoder(self, *, alpha: float | None = None, filter_p: float | None = None, use_cache: bool = True) -> Decoder:
        return self._make(alpha=alpha, filter_p=filter_p, use_cache=use_cache)


def load_method(ref: str, *, method: str | None = None, lm: str | None = None, device: torch.device | str = "cpu",
                registry: Registry | None = None) -> DetoxMethod:
    """The method ``ref`` provides (or ``method`` of it), on ``device``, in eval mode."""
    if method is not None and method not in METHODS:
        raise UsageError(f"--method {method!r} is not one of {', '.join(METHODS)}")
    registry = registry or Registry()
    card, read = _card_of(ref, registry)
    kind = card.get("kind", LM_KIND)
    if kind == LM_KIND:
        natural = "dapt" if (card.get("detox") or {}).get("method") == "dapt" else "base"
        if method not in (None, "base", natural):
            raise UsageError(f"{ref}: is a causal LM{' adapted with DAPT' if natural == 'dapt' else ''}; it "
                             f"cannot run --method {method}",
                             hint="train an ADLM head (mltk train adlm lm=REF) or DExperts (mltk train dexperts "
                                  "lm=REF) and pass that artifact")
        loaded = load_causal_lm(ref, registry=registry, device=device)
        return _plain(method or natural, ref, loaded)
    if kind not in (ADLM_KIND, DEXPERTS_KIND):
        raise ArtifactError(f"{ref}: is a {kind!r} artifact, not an LM or a detoxifier",
                            hint="give a causal-lm, adlm or dexperts artifact")
    natural = "adlm" if kind == ADLM_KIND else "dexperts"
    if method not in (None, "base", natural):
        raise UsageError(f"{ref}: is a {kind} artifact; --method is {natural} or base, not {method}")
    lm_ref = lm or (card.get("lm") or {}).get("reference") or ""
    if not lm_ref:
        raise ArtifactError(f"{ref}: its card names no LM", hint="pass the LM it was trained on with --lm")
    loaded = load_causal_lm(lm_ref, registry=registry, device=device)
    expected = (card.get("lm") or {}).get("fingerprint")
    if expected and lm_fingerprint(loaded.model) != expected:
        raise ArtifactError(f"{ref}: was trained on another LM than {lm_ref} (weights fingerprint differs)",
                            hint="pass the LM it was trained on with --lm")
    if method == "base":
        return _plain("base", ref, loaded)
    if kind == ADLM_KIND:
        return _adlm(ref, card, read, loaded, device)
    return _dexperts(ref, card, read, loaded, device)


def _plain(name: str, ref: str, loaded: LoadedLM) -> DetoxMethod:
    def make(*, alpha=None, filter_p=None, use_cache=True) -> Decoder:
        return LMDecoder(loaded.model, use_cache=use_cache)

    return DetoxMethod(name, ref, loaded, [], {}, make)


def _adlm(ref: str, card: dict, read, loaded: LoadedLM, device) -> DetoxMethod:
    spec = (card.get("arch") or {}).get("adlm_head")
    if not spec:
        raise ArtifactError(f"{ref}: the adlm card has no arch.adlm_head", hint="the card was edited or is damaged")

    def build() -> AdlmHead:
        try:
            return AdlmHead.from_spec(spec)
        except (KeyError, TypeError, ValueError, RuntimeError) as exc:
            raise ArtifactError(f"{ref}: the card's arch.adlm_head cannot be built ({repr(exc)[:200]})",
                                hint="the card was edited or is damaged") from None

    # Built on the meta device and compared with the file's header first: a card's sizes are not trusted.
    head = build_for_weights(build, read(HEAD_FILE), ref, fits="the ADLM head", hint=FOREIGN_WEIGHTS_HINT)
    check_head_fits(head, loaded.model, ref)
    head.to(device).eval()
    decoding = {"alpha": 2.0, "combine": "base", "filter_p": 1.0, **(card.get("decoding") or {})}

    def make(*, alpha=None, filter_p=None, use_cache=True) -> Decoder:
        return AdlmDecoder(loaded.model, head, alpha=decoding["alpha"] if alpha is None else alpha,
                           combine=decoding["combine"],
                           filter_p=decoding["filter_p"] if filter_p is None else filter_p, use_cache=use_cache)

    return DetoxMethod("adlm", ref, loaded, [head], decoding, make)


def _dexperts(ref: str, card: dict, read, loaded: LoadedLM, device) -> DetoxMethod:
    experts = []
    for filename in (EXPERT_FILE, ANTIEXPERT_FILE):
        model = copy.deepcopy(loaded.model)
        tensors, _ = load_safetensors(read(filename))
        load_weights_exactly(model, tensors, f"{ref} {filename}", fits="the LM", hint=FOREIGN_WEIGHTS_HINT)
        experts.append(model.to(device).eval())
    decoding = {"alpha": 2.0, "filter_p": 0.9, **(card.get("decoding") or {})}

    def make(*, alpha=None, filter_p=None, use_cache=True) -> Decoder:
        return ContrastDecoder(loaded.model, *experts, alpha=decoding["alpha"] if alpha is None else alpha,
                               filter_p=decoding["filter_p"] if filter_p is None else filter_p, use_cache=use_cache)

    return DetoxMethod("dexperts", ref, loaded, experts, decoding, make)


def _card_of(ref: str, registry: Registry) -> tuple[dict, Callable[[str], Path]]:
    """(card, file reader that checks sha256) of a registry artifact or an exported folder; ({}, ...) for a
    plain Hugging Face folder or hub name."""
    if ref.startswith(HUB_PREFIX):
        return {}, lambda name: Path(name)
    opened = open_artifact(ref, registry=registry, plain_folders=True)
    return opened.card, opened.file
