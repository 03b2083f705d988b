"""The ``fewshot-encoder`` artifact: a meta-learned FewShotNet's weights, and the card that rebuilds it."""

from __future__ import annotations

from mltk.core.artifact import WEIGHTS_FILE, build_card, open_artifact, provenance
from mltk.core.errors import ArtifactError
from mltk.core.tensor_files import load_safetensors, safetensors_bytes
from mltk.engines.robust.fewshot_net import ENCODERS, FewShotNet

KIND = "fewshot-encoder"
NETWORK_KEYS = ("encoder", "in_channels", "image_size", "width", "n_way", "projection_dim")


def network_spec(net_args: dict) -> dict:
    return {k: net_args[k] for k in NETWORK_KEYS}


def fewshot_artifact(net: FewShotNet, *, spec: dict, method: str, config: dict, config_sha256: str, metrics: dict,
                     domain: str, train_classes: list[str], unseen_classes: list[str],
                     inner: dict, extra: dict) -> tuple[dict, dict]:
    parent = f"dataset:{domain}"
    metadata = provenance(engine="robust", parent=parent, relation="trained", network=spec, method=method)
    files = {WEIGHTS_FILE: safetensors_bytes(net.state_dict(), metadata)}
    card = build_card(kind=KIND, engine="robust", config=config, config_sha256=config_sha256, metrics=metrics,
                      primary_metric="unseen_robust_accuracy", parent=parent, relation="trained",
                      parameters=sum(p.numel() for p in net.parameters()), network=spec, method=method,
                      inner=inner, task={"domain": domain, "train_classes": train_classes,
                                         "unseen_classes": unseen_classes}, **extra)
    return files, card


def load_fewshot_net(ref: str) -> tuple[FewShotNet, dict, str]:
    """(network, card, source) of the few-shot artifact ``ref``."""
    opened = open_artifact(ref, kinds=(KIND,), kind_hint="train one with `mltk train mavrl`")
    spec = opened.card.get("network") or {}
    if sorted(spec) != sorted(NETWORK_KEYS) or spec.get("encoder") not in ENCODERS:
        raise ArtifactError(f"{opened.source}: the card's network spec is missing or invalid",
                            hint="re-train, or check that the card was not edited")
    net = FewShotNet(**spec)
    tensors, _ = load_safetensors(opened.file(WEIGHTS_FILE))
    try:
        net.load_state_dict(tensors)
    except RuntimeError as exc:
        raise ArtifactError(f"{opened.source}: weights do not fit the card's network ({str(exc)[:200]})") from None
    return net.eval(), opened.card, opened.source
