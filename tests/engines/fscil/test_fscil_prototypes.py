"""Cosine nearest-class-mean and the prototype loss on hand-computed cases."""

from __future__ import annotations

import math

import torch

from mltk.engines.fscil.prototypes import class_prototypes, cosine_ncm, prototype_loss


def test_cosine_ncm_picks_the_smallest_angle_not_the_smallest_distance():
    prototypes = torch.tensor([[1.0, 0.0], [0.0, 1.0], [-1.0, -1.0]])
    features = torch.tensor([[10.0, 1.0],   # cos 0.995 to class 0 (far in Euclidean terms)
                             [0.1, 0.3],    # cos 0.949 to class 1, 0.316 to class 0
                             [-0.2, -0.1],  # cos 0.949 to class 2
                             [0.6, 0.5]])   # cos 0.768 to 0, 0.640 to 1
    assert cosine_ncm(features, prototypes).tolist() == [0, 1, 2, 0]


def test_prototypes_are_unit_means_of_unit_features():
    features = torch.tensor([[3.0, 0.0], [0.0, 1.0], [5.0, 5.0]])
    labels = torch.tensor([7, 7, 9])
    protos = class_prototypes(features, labels, [9, 7])
    s = 1 / math.sqrt(2)
    torch.testing.assert_close(protos, torch.tensor([[s, s], [s, s]]))  # mean of (1,0),(0,1) -> (s,s)


def test_prototype_loss_is_cross_entropy_over_novel_then_old_prototypes():
    features = torch.tensor([[1.0, 0.0], [0.0, 2.0]])
    labels = torch.tensor([5, 6])
    old = torch.tensor([[1.0, 1.0]])
    loss = prototype_loss(features, labels, (5, 6), old, temperature=2.0)
    # Novel prototypes are the shots themselves: cosines of shot 0 to [p5, p6, old] = [1, 0, s].
    s = 1 / math.sqrt(2)
    logits = 2.0 * torch.tensor([[1.0, 0.0, s], [0.0, 1.0, s]])
    expected = torch.nn.functional.cross_entropy(logits, torch.tensor([0, 1]))
    torch.testing.assert_close(loss, expected)
