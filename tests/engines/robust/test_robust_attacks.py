"""The attacks' defining properties: every perturbation stays in its eps-ball and in [0, 1]; a step raises
the loss it attacks; the label-free attack raises NT-Xent without labels; BatchNorm statistics and module
modes survive attacking; our PGD equals torchattacks' PGD from the same random start."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from mltk.core.errors import UsageError
from mltk.engines.robust.attacks import eval_mode, fgsm, instance_attack, parse_fraction, pgd
from mltk.engines.robust.contrastive import nt_xent_per_pair

EPS = 8 / 255


def small_net(seed: int = 0, classes: int = 5) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.AdaptiveAvgPool2d(2),
                         nn.Flatten(), nn.Dropout(0.1), nn.Linear(32, classes))


def batch(seed: int = 1, n: int = 16):
    g = torch.Generator().manual_seed(seed)
    images = torch.rand(n, 3, 8, 8, generator=g)
    images[:4] = images[:4].round()  # pixels at 0 and 1 exactly: the clamp has to work there
    return images, torch.randint(0, 5, (n,), generator=g)


def in_ball_and_box(adv, clean, eps, norm):
    assert adv.min() >= 0 and adv.max() <= 1
    delta = (adv - clean).flatten(1)
    size = delta.abs().amax(1) if norm == "linf" else delta.norm(dim=1)
    assert size.max() <= eps + 1e-6
    return size


@pytest.mark.parametrize("norm,eps", [("linf", EPS), ("l2", 0.5)])
@pytest.mark.parametrize("restarts", [1, 3])
def test_pgd_stays_in_ball_and_box(norm, eps, restarts):
    model, (images, labels) = small_net(), batch()
    adv = pgd(model, images, labels, eps=eps, step_size=eps / 3, steps=5, norm=norm, restarts=restarts)
    size = in_ball_and_box(adv, images, eps, norm)
    assert size.max() > 0.5 * eps  # it did move


def test_fgsm_and_instance_attack_stay_in_ball_and_box():
    model, (images, labels) = small_net(), batch()
    in_ball_and_box(fgsm(model, images, labels, eps=EPS), images, EPS, "linf")
    other = (images + 0.05 * torch.randn_like(images)).clamp(0, 1)
    adv = instance_attack(lambda x: model(x), images, other, eps=EPS, step_size=EPS / 4, steps=4, modules=(model,))
    in_ball_and_box(adv, images, EPS, "linf")


def test_a_pgd_step_raises_the_cross_entropy_it_attacks():
    model, (images, labels) = small_net(), batch()
    model.eval()
    with torch.no_grad():
        before = F.cross_entropy(model(images), labels)
        after = F.cross_entropy(model(pgd(model, images, labels, eps=EPS, step_size=EPS, steps=1,
                                          random_start=False)), labels)
    assert after > before


def test_the_label_free_attack_raises_nt_xent_and_reads_no_labels():
    model, (images, _) = small_net(), batch()
    model.eval()
    other = (images + 0.05 * torch.randn_like(images)).clamp(0, 1)
    adv = instance_attack(model, images, other, eps=EPS, step_size=EPS / 4, steps=5)  # no labels anywhere
    with torch.no_grad():
        target = model(other)
        assert nt_xent_per_pair(model(adv), target).mean() > nt_xent_per_pair(model(images), target).mean()


def test_attacks_leave_batchnorm_statistics_and_modes_untouched():
    model, (images, labels) = small_net(), batch()
    model.train()
    model[1].momentum = 1.0  # any forward in train mode would overwrite the running statistics entirely
    state = {k: v.clone() for k, v in model.state_dict().items()}
    pgd(model, images, labels, eps=EPS, step_size=EPS / 4, steps=3, restarts=2)
    fgsm(model, images, labels, eps=EPS)
    instance_attack(model, images, images.flip(0), eps=EPS, step_size=EPS / 4, steps=2, modules=(model,))
    assert all(torch.equal(state[k], v) for k, v in model.state_dict().items())
    assert all(m.training for m in model.modules())
    assert all(p.grad is None for p in model.parameters())
    model[5].eval()
    with eval_mode(model):
        assert not any(m.training for m in model.modules())
    assert [m.training for m in model.modules()] == [True] * 6 + [False, True]


@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_pgd_equals_torchattacks_pgd_from_the_same_random_start(norm):
    torchattacks = pytest.importorskip("torchattacks")

    model, (images, labels) = small_net(), batch(n=32)
    eps, step = (EPS, 2 / 255) if norm == "linf" else (0.5, 0.1)
    reference = (torchattacks.PGD if norm == "linf" else torchattacks.PGDL2)(model, eps=eps, alpha=step, steps=10,
                                                                            random_start=True)
    torch.manual_seed(7)
    theirs = reference(images, labels)
    model.train()  # ours must put the model in eval mode itself, and restore train mode after
    torch.manual_seed(7)
    ours = pgd(model, images, labels, eps=eps, step_size=step, steps=10, norm=norm)
    assert torch.allclose(ours, theirs, atol=1e-6)
    assert all(m.training for m in model.modules())


def test_pgd_lowers_the_accuracy_of_a_trained_model():
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = torch.tensor(digits.images, dtype=torch.float32).div(16).unsqueeze(1)
    labels = torch.tensor(digits.target)
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 10))
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(150):
        optimizer.zero_grad()
        F.cross_entropy(model(images[:1400]), labels[:1400]).backward()
        optimizer.step()
    test_x, test_y = images[1400:], labels[1400:]
    clean = (model(test_x).argmax(1) == test_y).float().mean()
    weak = (model(fgsm(model, test_x, test_y, eps=0.1)).argmax(1) == test_y).float().mean()
    strong = (model(pgd(model, test_x, test_y, eps=0.1, step_size=0.025, steps=10)).argmax(1) == test_y).float().mean()
    assert clean > 0.9 and strong < clean - 0.3 and strong <= weak


@pytest.mark.parametrize("text,expected", [("8/255", 8 / 255), ("0.5", 0.5), (0.25, 0.25), ("0", 0.0)])
def test_budgets_read_fractions(text, expected):
    assert parse_fraction(text, "eps") == pytest.approx(expected)


@pytest.mark.parametrize("text", ["8/25x", "8", "-1/255", "1/0"])
def test_budgets_outside_the_unit_range_or_unreadable_are_usage_errors(text):
    with pytest.raises(UsageError, match="--eps"):
        parse_fraction(text, "eps")
