"""Frozen-feature evaluation: feature extraction, weighted k-NN, the standardised linear probe,
and the held-out reconstruction error of a masked auto-encoder.

Shared by the recipes' end-of-training ``evaluate()`` and the ``knn`` /
``linear-probe`` protocols, so both report the same numbers for the same model.
Always in float32, whatever precision the model trained in: under mixed
precision the end-of-training figures would otherwise differ from what
``mltk eval`` reports for the same artifact.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F

from mltk.core.seeding import generator
from mltk.nn.encoders.mae import MaskedAutoencoder, random_permutation

RECON_MASK_SEED = 0x5EC0  # the held-out masks are the same for every model and every run


@torch.no_grad()
def extract_features(features: Callable[[torch.Tensor], torch.Tensor], images: torch.Tensor, *,
                     batch_size: int, device: torch.device) -> torch.Tensor:
    """uint8 images [N, C, S, S] -> float32 features [N, D] on the CPU."""
    out = []
    for begin in range(0, len(images), batch_size):
        batch = images[begin:begin + batch_size].to(device).float().div_(255)
        out.append(features(batch).float().cpu())
    return torch.cat(out)


def knn_predict(train_features: torch.Tensor, train_labels: torch.Tensor, test_features: torch.Tensor, *,
                num_classes: int, k: int = 20, temperature: float = 0.07, chunk: int = 1024) -> torch.Tensor:
    """Weighted k-NN on cosine similarity (the DINO / InstDisc protocol): int64 [M] predicted classes.

    Each of the k nearest train features votes for its class with weight
    exp(similarity / temperature). train_features [N, D], train_labels [N], test_features [M, D].
    """
    k = min(k, len(train_features))
    train = F.normalize(train_features, dim=1)
    predictions = []
    for begin in range(0, len(test_features), chunk):
        test = F.normalize(test_features[begin:begin + chunk], dim=1)
        similarity, index = (test @ train.T).topk(k, dim=1)
        weights = (similarity / temperature).exp()
        votes = torch.zeros(len(test), num_classes, dtype=weights.dtype)
        votes.scatter_add_(1, train_labels[index], weights)
        predictions.append(votes.argmax(dim=1))
    return torch.cat(predictions)


def linear_probe(train_features: torch.Tensor, train_labels: torch.Tensor, test_features: torch.Tensor,
                 test_labels: torch.Tensor, *, c: float = 1.0, max_iter: int = 1000) -> dict:
    """Multinomial logistic regression on standardised frozen features (scikit-learn, L-BFGS).

    The features are standardised with the train set's mean and std (MAE's
    linear probe puts a BatchNorm without affine before its linear layer: the
    same thing). Returns {"accuracy", "train_accuracy", "iterations"}.
    """
    # Imported here: scikit-learn takes about a second to load, and only probes need it.
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    scaler = StandardScaler().fit(train_features.numpy())
    x_train = scaler.transform(train_features.numpy())
    x_test = scaler.transform(test_features.numpy())
    probe = LogisticRegression(C=c, max_iter=max_iter)
    probe.fit(x_train, train_labels.numpy())
    return {"accuracy": float((probe.predict(x_test) == test_labels.numpy()).mean()),
            "train_accuracy": float((probe.predict(x_train) == train_labels.numpy()).mean()),
            "iterations": int(np.max(probe.n_iter_))}


@torch.no_grad()
def reconstruction_loss(model: MaskedAutoencoder, images: torch.Tensor, *, batch_size: int,
                        device: torch.device) -> float:
    """Masked-patch loss on ``images`` (uint8 [N, C, S, S]) with masks fixed by RECON_MASK_SEED."""
    was_training = model.training
    model.eval()
    permutation = random_permutation(len(images), model.num_patches, generator=generator(RECON_MASK_SEED))
    total, masked = 0.0, 0.0
    for begin in range(0, len(images), batch_size):
        batch = images[begin:begin + batch_size].to(device).float().div_(255)
        out = model(batch, permutation[begin:begin + batch_size].to(device))
        per_patch = (out.pred.float() - out.target.float()).pow(2).mean(dim=-1)
        total += float((per_patch * out.mask).sum())
        masked += float(out.mask.sum())
    model.train(was_training)
    return total / max(masked, 1.0)


def subset_indices(count: int, limit: int, seed: int) -> torch.Tensor:
    """``limit`` indices of range(count) chosen by a seeded permutation (all, in order, when limit is 0 or >= count)."""
    if limit <= 0 or limit >= count:
        return torch.arange(count)
    return torch.randperm(count, generator=generator(seed, 0xFEA7))[:limit].sort().values
