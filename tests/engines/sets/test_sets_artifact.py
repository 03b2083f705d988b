"""Set-model artifacts read back: cards written before ``pma_feedforward`` existed still load (their models
had the Linear + ReLU in front of PMA), and weights that do not fit the card fail with one line naming them."""

from __future__ import annotations

import pytest
import torch

from mltk.core.errors import ArtifactError
from mltk.core.registry import Registry
from mltk.engines.sets import UmbcConfig, load_set_model
from mltk.engines.sets.artifact import set_model_artifact
from mltk.engines.sets.model import SetModel, SetModelSpec


def _save(registry: Registry, model: SetModel, **card_changes) -> str:
    files, card = set_model_artifact(model, config=UmbcConfig(), metrics={}, primary_metric="test_nll",
                                     higher_is_better=False, parent="mog",
                                     task={"type": "mixture", "components": 2, "dims": 2})
    spec = dict(card["set_model"])
    for key, value in card_changes.items():
        if value is None:
            spec.pop(key)
        else:
            spec[key] = value
    record = registry.save("sets", files=files, card={**card, "set_model": spec})
    return f"sets:{record.version}"


@pytest.mark.parametrize("kind", ["umbc", "set-transformer"])
def test_cards_without_pma_feedforward_load_with_the_feedforward(tmp_path, kind):
    torch.manual_seed(0)
    model = SetModel(SetModelSpec(kind=kind, dim_in=2, hidden=8, slots=2, heads=2, outputs=2, out_features=5,
                                  head_layers=1, slot_type="learned", pma_feedforward=True)).eval()
    registry = Registry(tmp_path)
    loaded = load_set_model(_save(registry, model, pma_feedforward=None), registry)
    assert loaded.model.spec.pma_feedforward
    x = torch.randn(3, 20, 2)
    with torch.no_grad():
        assert torch.equal(loaded.model(x), model(x))


def test_weights_that_do_not_fit_the_card_name_what_differs(tmp_path):
    model = SetModel(SetModelSpec(dim_in=2, hidden=8, slots=2, heads=2, outputs=2, out_features=5, head_layers=1,
                                  pma_feedforward=False))
    registry = Registry(tmp_path)
    with pytest.raises(ArtifactError) as error:
        load_set_model(_save(registry, model, pma_feedforward=True), registry)
    message = str(error.value)
    assert "2 missing (head.1.ff.0.weight, head.1.ff.0.bias)" in message and "pma_feedforward=false" in message
    assert "\n" not in message
