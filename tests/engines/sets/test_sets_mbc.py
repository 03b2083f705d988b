"""Mini-batch consistency: any partition of a set, in any order, chunks of one element included, encodes to
exactly what the whole set encodes to; for every activation and head; padding changes nothing; random slots
are drawn once per set; the plain set transformer is not consistent."""

from __future__ import annotations

import pytest
import torch

from mltk.engines.sets.inputs import BadSetError, chunks_of, random_partition
from mltk.engines.sets.model import HEADS, SetModel, SetModelSpec
from mltk.engines.sets.slots import ACTIVATIONS


def _model(**kw) -> SetModel:
    torch.manual_seed(0)
    spec = SetModelSpec(**{"dim_in": 3, "hidden": 16, "slots": 4, "heads": 2, "outputs": 1, "out_features": 5,
                           "slot_type": "learned", **kw})
    return SetModel(spec).double().eval()


def _stream(model, x, sizes):
    start, chunks = 0, []
    for size in sizes:
        chunks.append(x[:, start:start + size])
        start += size
    return model.decode(model.encode_stream(chunks))


@pytest.mark.parametrize("activation", ACTIVATIONS)
def test_every_activation_is_consistent_over_random_partitions_and_orders(activation):
    model = _model(activation=activation, head="sab")
    g = torch.Generator().manual_seed(1)
    x = torch.randn(2, 60, 3, generator=g, dtype=torch.double)
    with torch.no_grad():
        full = model(x)
        worst = 0.0
        for trial in range(12):
            perm = torch.randperm(60, generator=g)
            sizes = random_partition(60, [1, 2, 7, 60][trial % 4], g)
            worst = max(worst, float((_stream(model, x[:, perm], sizes) - full).abs().max()))
        ones = _stream(model, x, [1] * 60)  # chunks of a single element
    assert worst < 1e-12
    assert float((ones - full).abs().max()) < 1e-12


@pytest.mark.parametrize("head", HEADS)
def test_every_umbc_head_and_the_mbc_baselines_are_consistent(head):
    g = torch.Generator().manual_seed(2)
    x = torch.randn(3, 40, 3, generator=g, dtype=torch.double)
    models = [_model(head=head)]
    if head in ("sab", "pma"):
        models.append(_model(head=head, pma_feedforward=False))
    if head == "sab":
        models += [_model(kind="sse"), _model(kind="deepsets", pooling="sum"), _model(kind="deepsets", pooling="max")]
    for model in models:
        with torch.no_grad():
            full = model(x)
            streamed = _stream(model, x[:, torch.randperm(40, generator=g)], random_partition(40, 5, g))
        assert float((streamed - full).abs().max()) < 1e-12, model.spec


def test_float32_consistency_within_1e_5():
    model = _model(activation="softmax").float()
    x = torch.randn(2, 500, 3)
    with torch.no_grad():
        full = model(x)
        streamed = _stream(model, x, random_partition(500, 50, torch.Generator().manual_seed(0)))
    assert float((streamed - full).abs().max()) < 1e-5


def test_padding_masks_change_nothing():
    model = _model(activation="slot-softmax")
    x = torch.randn(2, 30, 3, dtype=torch.double)
    padded = torch.cat([x, 1e3 * torch.randn(2, 9, 3, dtype=torch.double)], 1)  # junk in the padding
    mask = torch.ones(2, 39, dtype=torch.bool)
    mask[:, 30:] = False
    with torch.no_grad():
        assert float((model(padded, mask) - model(x)).abs().max()) < 1e-12
        streamed = model.decode(model.encode_stream(chunks_of(padded, 4, mask)))
        assert float((streamed - model(x)).abs().max()) < 1e-12


def test_random_slots_are_drawn_once_per_set():
    model = _model(slot_type="random").train()
    x = torch.randn(2, 40, 3, dtype=torch.double)
    with torch.no_grad():
        torch.manual_seed(5)
        full = model.encode(x)
        torch.manual_seed(5)
        streamed = model.encode_stream(chunks_of(x, 3))
        assert float((streamed - full).abs().max()) < 1e-12
        assert float((full - model.encode(x)).abs().max()) > 1e-3  # another draw is another encoding
        torch.manual_seed(5)  # drawing again for every chunk (the mistake) breaks consistency
        redrawn = [model.partial(c, model.begin(2)) for c in (x[:, :20], x[:, 20:])]
        torch.manual_seed(5)
        context = model.begin(2)
        assert float((model.finish(model.combine(*redrawn), context) - full).abs().max()) > 1e-3


def test_plain_set_transformer_is_not_consistent():
    model = _model(kind="set-transformer")
    x = torch.randn(2, 60, 3, dtype=torch.double)
    with torch.no_grad():
        gap = float((model.decode(model.encode_stream(chunks_of(x, 10))) - model(x)).abs().max())
    assert gap > 1e-4


def test_permutation_invariance():
    for kind in ("umbc", "set-transformer"):
        model = _model(kind=kind)
        x = torch.randn(2, 33, 3, dtype=torch.double)
        with torch.no_grad():
            assert float((model(x[:, torch.randperm(33)]) - model(x)).abs().max()) < 1e-12


def test_bad_streams_are_refused():
    model = _model()
    with pytest.raises(BadSetError, match="empty"):
        model.encode_stream([torch.zeros(1, 0, 3, dtype=torch.double)])
    with pytest.raises(BadSetError, match="chunk 1: has 4 features"):
        model.encode_stream([torch.zeros(1, 2, 3, dtype=torch.double), torch.zeros(1, 2, 4, dtype=torch.double)])
    bad = torch.zeros(1, 5, 3, dtype=torch.double)
    bad[0, 1, 2], bad[0, 3, 0] = float("nan"), float("inf")
    with pytest.raises(BadSetError, match="chunk 0: 2 non-finite"):
        model.encode_stream([bad])
    from mltk.core.errors import UsageError
    with pytest.raises(UsageError, match="chunk size 0"):
        list(chunks_of(bad, 0))
