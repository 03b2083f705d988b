"""UAGDet (arXiv 2208.10781): refine the RoI features of uncertain objects from certain neighbours.

On top of the base detector's RoI head, per image (patch)::

    u_i   = entropy(p_i) / log(C + 1)            # p_i: the RoI head's posterior over C classes + background
    certain_i = u_i <= tau                       # the rest are uncertain
    edges j -> i: for each uncertain i, the k certain j nearest under
          d_ij = |c_i - c_j| / r + (1 - cos(f_i, f_j)),  only where |c_i - c_j| <= r
    m_ij  = MLP([f_j, f_i, (c_j - c_i) / r, |c_j - c_i| / r])
    a_ij  = softmax over i's edges of  w . m_ij
    f_i'  = f_i + U([f_i, sum_j a_ij m_ij])      # uncertain i with an edge; every other f_i' = f_i
    class and box of i predicted again from f_i' by the same classifier and regressor

and in training the refined predictions add ``sum_i w_i (L_cls,i + L_box,i)``
with ``w_i = 1 + beta u_i`` to the base detector's losses. ``c`` are the RoI
centres in pixels, ``f`` the RoI head's FC representation.

The paper's code is not public; the formulation above is the project's
brief (docs/detect.md, "our interpretation"): the distance, the message MLP,
the attention and the residual update are our choices. Uncertainty is
measured before NMS, on every RoI, so objects that NMS would merge are still
refined one by one.

``refine`` chooses the ablation: ``uncertain`` (UAGDet), ``all`` (every
object is a target and every other object a source: the refine-all
baseline) or ``none`` (the base head alone). ``uncertainty`` chooses the
source: ``entropy`` of the posterior, or ``mc-dropout``: the entropy of the
mean posterior over ``mc_samples`` dropout masks on the representation.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from mltk.core.sections import check_values


@dataclasses.dataclass(frozen=True)
class GraphSettings:
    refine: Literal["uncertain", "all", "none"] = "uncertain"  # none = the base detector (oriented-rcnn)
    uncertainty: Literal["entropy", "mc-dropout"] = "entropy"
    tau: float = 0.3  # certain when u <= tau
    neighbours: int = 8  # k certain sources per uncertain object
    radius: float = 256.0  # pixels: scales the spatial distance, and no edge is longer
    hidden: int = 256  # width of the messages
    beta: float = 1.0  # loss weight 1 + beta * u of a refined object
    mc_samples: int = 8  # dropout masks, with uncertainty=mc-dropout
    mc_dropout: float = 0.2  # their drop rate

    def value_problems(self) -> list[str]:
        return check_values(self, {"tau": "fraction", "neighbours": "positive", "radius": "positive",
                                   "hidden": "positive", "beta": "non-negative", "mc_samples": "positive",
                                   "mc_dropout": "fraction"})


def normalized_entropy(probabilities: torch.Tensor) -> torch.Tensor:
    """Posteriors ``(N, K)`` -> entropy / log K ``(N,)`` in [0, 1]: 0 for one-hot, 1 for uniform."""
    if probabilities.shape[1] < 2:
        return probabilities.new_zeros(probabilities.shape[0])
    p = probabilities.float().clamp_min(0)
    entropy = -(p * torch.log(p.clamp_min(1e-12))).sum(1)
    return (entropy / math.log(probabilities.shape[1])).clamp(0, 1)


def mc_dropout_uncertainty(classifier: nn.Module, representation: torch.Tensor, *, samples: int,
                           rate: float) -> torch.Tensor:
    """Normalised entropy of the mean posterior over ``samples`` dropout masks on ``representation`` ``(N, R)``.

    The draws come from the global generator (re-seeded every training step).
    """
    with torch.no_grad():
        mean = torch.stack([classifier(F.dropout(representation, rate, training=True)).float().softmax(1)
                            for _ in range(samples)]).mean(0)
    return normalized_entropy(mean)


def graph_edges(centers: torch.Tensor, features: torch.Tensor, image_index: torch.Tensor,
                sources: torch.Tensor, targets: torch.Tensor, *, neighbours: int,
                radius: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Directed edges ``(source, target)`` (each ``(E,)`` node indices) from the k nearest sources of each target.

    ``centers`` ``(N, 2)``, ``features`` ``(N, R)``, ``image_index`` ``(N,)``;
    ``sources`` and ``targets`` ``(N,)`` bool. Nodes of different images are
    never joined, nor a node to itself, nor nodes farther apart than ``radius``.
    """
    edge_sources, edge_targets = [], []
    unit = F.normalize(features.detach().float(), dim=1)
    for image in image_index.unique():
        in_image = image_index == image
        source_nodes = (in_image & sources).nonzero().squeeze(1)
        target_nodes = (in_image & targets).nonzero().squeeze(1)
        if source_nodes.numel() == 0 or target_nodes.numel() == 0:
            continue
        spatial = torch.cdist(centers[target_nodes].float(), centers[source_nodes].float()) / radius
        semantic = 1 - unit[target_nodes] @ unit[source_nodes].T
        distance = spatial + semantic
        distance[spatial > 1] = math.inf
        distance[target_nodes[:, None] == source_nodes[None, :]] = math.inf
        nearest = distance.topk(min(neighbours, source_nodes.numel()), dim=1, largest=False)
        reachable = torch.isfinite(nearest.values)
        rows = torch.arange(target_nodes.numel(), device=centers.device)[:, None].expand_as(reachable)
        edge_sources.append(source_nodes[nearest.indices[reachable]])
        edge_targets.append(target_nodes[rows[reachable]])
    empty = torch.zeros(0, dtype=torch.long, device=centers.device)
    return torch.cat([empty, *edge_sources]), torch.cat([empty, *edge_targets])


class GraphRefiner(nn.Module):
    """Attention message passing that changes only the features of nodes with incoming edges."""

    def __init__(self, representation: int, hidden: int):
        super().__init__()
        self.message = nn.Sequential(nn.Linear(2 * representation + 3, hidden), nn.ReLU(),
                                     nn.Linear(hidden, hidden), nn.ReLU())
        self.attention = nn.Linear(hidden, 1)
        self.update = nn.Sequential(nn.Linear(representation + hidden, hidden), nn.ReLU(),
                                    nn.Linear(hidden, representation))
        # Zero last layer: an untrained refiner leaves features as they are, so UAGDet starts as its base.
        nn.init.zeros_(self.update[-1].weight)
        nn.init.zeros_(self.update[-1].bias)

    def forward(self, features: torch.Tensor, centers: torch.Tensor, edge_sources: torch.Tensor,
                edge_targets: torch.Tensor, radius: float) -> tuple[torch.Tensor, torch.Tensor]:
        """Features ``(N, R)`` -> (refined features ``(N, R)``, refined node indices ``(T,)``)."""
        refined_nodes = edge_targets.unique()
        if refined_nodes.numel() == 0:
            return features, refined_nodes
        offset = (centers[edge_sources] - centers[edge_targets]).to(features.dtype) / radius
        messages = self.message(torch.cat([features[edge_sources], features[edge_targets], offset,
                                           offset.norm(dim=1, keepdim=True)], 1))
        # Softmax over each target's incoming edges, stabilised by the target's largest logit.
        logits = self.attention(messages).squeeze(1).float()
        largest = torch.full((features.shape[0],), -math.inf, device=logits.device)
        largest = largest.scatter_reduce(0, edge_targets, logits, reduce="amax")
        weights = (logits - largest[edge_targets]).exp()
        totals = torch.zeros(features.shape[0], device=logits.device).index_add(0, edge_targets, weights)
        attention = (weights / totals[edge_targets]).to(messages.dtype)
        gathered = torch.zeros(features.shape[0], messages.shape[1], dtype=messages.dtype, device=messages.device)
        gathered = gathered.index_add(0, edge_targets, attention[:, None] * messages)[refined_nodes]
        change = self.update(torch.cat([features[refined_nodes], gathered], 1))
        # index_add leaves every other row bit for bit as it was.
        return features.index_add(0, refined_nodes, change.to(features.dtype)), refined_nodes


def split_nodes(uncertainty: torch.Tensor, settings: GraphSettings) -> tuple[torch.Tensor, torch.Tensor]:
    """(sources, targets) ``(N,)`` bool for the ``refine`` mode: certain -> uncertain, or every node both."""
    if settings.refine == "all":
        everyone = torch.ones_like(uncertainty, dtype=torch.bool)
        return everyone, everyone
    uncertain = uncertainty > settings.tau
    if settings.refine == "none":
        return ~uncertain, torch.zeros_like(uncertain)
    return ~uncertain, uncertain
