"""UAGDet's defining properties: uncertainty is a normalised entropy, edges run only from certain to
uncertain objects of one image, and refinement leaves every certain object's features as they were."""

from __future__ import annotations

import math

import torch

from mltk.engines.detect.model import DetectorSpec, OrientedDetector, total_loss
from mltk.engines.detect.proposals import ProposalSettings
from mltk.engines.detect.roi_head import RoiSettings
from mltk.engines.detect.uagdet import (
    GraphRefiner,
    GraphSettings,
    graph_edges,
    mc_dropout_uncertainty,
    normalized_entropy,
    split_nodes,
)


def test_uncertainty_is_zero_for_one_hot_one_for_uniform_and_in_between_otherwise():
    one_hot = torch.eye(5)
    assert torch.equal(normalized_entropy(one_hot), torch.zeros(5))
    assert torch.allclose(normalized_entropy(torch.full((3, 5), 0.2)), torch.ones(3))
    random = torch.rand(100, 16, generator=torch.Generator().manual_seed(0)).softmax(1)
    values = normalized_entropy(random)
    assert ((values > 0) & (values < 1)).all()
    # Two outcomes at 0.9 / 0.1: H / log 2 by hand.
    expected = -(0.9 * math.log(0.9) + 0.1 * math.log(0.1)) / math.log(2)
    assert abs(float(normalized_entropy(torch.tensor([[0.9, 0.1]]))) - expected) < 1e-6


def test_mc_dropout_uncertainty_lies_in_the_unit_interval():
    torch.manual_seed(0)
    classifier = torch.nn.Linear(8, 4)
    values = mc_dropout_uncertainty(classifier, torch.randn(10, 8), samples=5, rate=0.3)
    assert values.shape == (10,) and ((values >= 0) & (values <= 1)).all()


def _scene(generator: torch.Generator):
    centers = torch.rand(40, 2, generator=generator) * 100
    features = torch.randn(40, 16, generator=generator)
    image_index = torch.arange(40) % 2
    uncertainty = torch.rand(40, generator=generator)
    return centers, features, image_index, uncertainty


def test_edges_run_only_from_certain_to_uncertain_objects_of_the_same_image():
    centers, features, image_index, uncertainty = _scene(torch.Generator().manual_seed(1))
    settings = GraphSettings(tau=0.5, neighbours=3, radius=60.0)
    sources, targets = split_nodes(uncertainty, settings)
    edge_sources, edge_targets = graph_edges(centers, features, image_index, sources, targets,
                                             neighbours=settings.neighbours, radius=settings.radius)
    assert edge_sources.numel() > 0
    assert (uncertainty[edge_sources] <= 0.5).all() and (uncertainty[edge_targets] > 0.5).all()
    assert torch.equal(image_index[edge_sources], image_index[edge_targets])
    assert ((centers[edge_sources] - centers[edge_targets]).norm(dim=1) <= 60.0).all()
    assert edge_targets.bincount().max() <= 3


def test_edges_take_the_nearest_sources_under_spatial_plus_semantic_distance():
    centers = torch.tensor([[0.0, 0.0], [10.0, 0.0], [50.0, 0.0], [1.0, 0.0]])
    features = torch.tensor([[1.0, 0.0], [1.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
    image_index = torch.zeros(4, dtype=torch.long)
    uncertain = torch.tensor([True, False, False, False])
    # Node 3 is nearest in space but orthogonal in features (distance 0.01 + 1); node 1 wins (0.1 + 0).
    edge_sources, edge_targets = graph_edges(centers, features, image_index, ~uncertain, uncertain,
                                             neighbours=1, radius=100.0)
    assert edge_sources.tolist() == [1] and edge_targets.tolist() == [0]


def test_refinement_changes_uncertain_features_and_leaves_certain_ones_bit_for_bit():
    generator = torch.Generator().manual_seed(2)
    centers, features, image_index, uncertainty = _scene(generator)
    settings = GraphSettings(tau=0.5, neighbours=4, radius=80.0, hidden=8)
    sources, targets = split_nodes(uncertainty, settings)
    edges = graph_edges(centers, features, image_index, sources, targets, neighbours=4, radius=80.0)
    torch.manual_seed(0)
    refiner = GraphRefiner(16, 8)
    torch.nn.init.normal_(refiner.update[-1].weight)  # an untrained refiner is the identity by design
    refined, refined_nodes = refiner(features, centers, *edges, 80.0)
    certain = ~targets
    assert torch.equal(refined[certain], features[certain])
    assert set(refined_nodes.tolist()) == set(edges[1].tolist())
    assert (refined[refined_nodes] != features[refined_nodes]).any(1).all()
    # The refined features carry gradient back to the certain sources' features (messages read them).
    features.requires_grad_(True)
    refiner(features, centers, *edges, 80.0)[0][refined_nodes].sum().backward()
    assert features.grad[edges[0]].abs().sum() > 0


def test_refine_modes_all_and_none():
    uncertainty = torch.tensor([0.1, 0.9, 0.5])
    sources, targets = split_nodes(uncertainty, GraphSettings(refine="all"))
    assert sources.all() and targets.all()
    _, targets = split_nodes(uncertainty, GraphSettings(refine="none"))
    assert not targets.any()


def _tiny_spec(**graph) -> DetectorSpec:
    # NMS at IoU 1 suppresses nothing, so every RoI's boxes reach the output and can be compared.
    return DetectorSpec(classes=("small-vehicle", "large-vehicle"), fpn_channels=8,
                        proposals=ProposalSettings(pre_nms_per_level=30, post_nms=24, sampled_anchors=32),
                        roi=RoiSettings(representation=16, sampled_rois=16, score_threshold=0.0, nms_iou=1.0),
                        graph=GraphSettings(hidden=8, **graph))


# An untrained head is nearly uniform (uncertainty 0.9990 to 0.99996 on this input): this tau splits it.
TAU = 0.99975


def test_detector_keeps_certain_predictions_of_the_base_head():
    torch.manual_seed(0)
    model = OrientedDetector(_tiny_spec(tau=TAU, radius=500.0)).eval()
    torch.nn.init.normal_(model.refiner.update[-1].weight)
    images = torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        refined = model(images)
        model.refiner = None  # the base head alone
        base = model(images)
    assert refined.rois == base.rois and 0 < refined.refined < refined.rois
    # Detections of RoIs the graph did not refine are the base head's, box and score alike.
    kept = ~refined.detections[0].refined
    for box, score in zip(refined.detections[0].boxes[kept], refined.detections[0].scores[kept], strict=True):
        same = (base.detections[0].boxes == box).all(1) & (base.detections[0].scores == score)
        assert same.any()


def _train_two_steps(spec: DetectorSpec) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(4)
    images = torch.rand(2, 3, 64, 64, generator=generator)
    targets = [{"boxes": torch.tensor([[20.0, 24.0, 18.0, 8.0, 0.3], [44.0, 40.0, 24.0, 9.0, -1.0]]),
                "labels": torch.tensor([0, 1])},
               {"boxes": torch.tensor([[32.0, 30.0, 20.0, 10.0, 1.2]]), "labels": torch.tensor([1])}]
    torch.manual_seed(0)
    model = OrientedDetector(spec)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    for step in range(2):
        torch.manual_seed(100 + step)
        loss = total_loss(model(images, targets))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return {key: value for key, value in model.state_dict().items() if not key.startswith("refiner.")}


def test_with_no_uncertain_object_uagdet_trains_exactly_as_its_base_detector():
    base = _train_two_steps(_tiny_spec(refine="none"))
    nothing_uncertain = _train_two_steps(_tiny_spec(refine="uncertain", tau=1.0))
    everything_refined = _train_two_steps(_tiny_spec(refine="all", radius=500.0))
    assert base.keys() == nothing_uncertain.keys()
    assert all(torch.equal(base[key], nothing_uncertain[key]) for key in base)
    # Refining every object changes the shared parameters through the graph loss.
    assert any(not torch.equal(base[key], everything_refined[key]) for key in base)
