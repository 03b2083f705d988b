"""``mltk eval REF --protocol robust`` through the real entry point, on a small trained ConvNet (with
BatchNorm) on the built-in digits: robust accuracy below clean, a budget-0 attack changes nothing, the
settings recorded; bad input exits 2 with the fix named."""

from __future__ import annotations

import builtins
import sys

import pytest


def test_robust_protocol_reports_clean_and_attacked_accuracy(cli, fp_digits):
    result = cli("eval", str(fp_digits), "--protocol", "robust", "--attack", "pgd,fgsm", "--eps", "8/255",
                 "--steps", "10", "--format", "json")
    assert result.code == 0, result.stderr
    out = result.json()
    metrics = out["metrics"]
    assert metrics["clean_accuracy"] > 0.85
    assert metrics["robust_accuracy_pgd"] < metrics["clean_accuracy"]
    assert metrics["robust_accuracy_pgd"] <= metrics["robust_accuracy_fgsm"] + 0.02
    assert metrics["robust_accuracy"] <= min(metrics["robust_accuracy_pgd"], metrics["robust_accuracy_fgsm"])
    assert out["eps"] == pytest.approx(8 / 255) and out["steps"] == 10 and out["attacks"] == ["pgd", "fgsm"]

    zero = cli("eval", str(fp_digits), "--protocol", "robust", "--eps", "0", "--format", "json").json()["metrics"]
    assert zero["robust_accuracy"] == zero["clean_accuracy"] == metrics["clean_accuracy"]


@pytest.mark.parametrize("args,message", [
    (["--eps", "8"], "outside [0, 1]"),
    (["--eps", "eight"], "fraction such as 8/255"),
    (["--step-size", "-1/255"], "outside [0, 1]"),
    (["--attack", "cw"], "pgd, pgd-l2, fgsm, autoattack"),
])
def test_bad_attack_settings_exit_2(cli, fp_digits, args, message):
    result = cli("eval", str(fp_digits), "--protocol", "robust", *args)
    assert result.code == 2 and message in result.stderr


def test_autoattack_without_its_extra_says_how_to_install_it(cli, fp_digits, monkeypatch):
    real_import = builtins.__import__

    def no_torchattacks(name, *args, **kwargs):
        if name == "torchattacks":
            raise ImportError("No module named 'torchattacks'")
        return real_import(name, *args, **kwargs)

    monkeypatch.delitem(sys.modules, "torchattacks", raising=False)
    monkeypatch.setattr(builtins, "__import__", no_torchattacks)
    result = cli("eval", str(fp_digits), "--protocol", "robust", "--attack", "autoattack", "--images", "4")
    assert result.code == 2 and "mltk[robust]" in result.stderr


@pytest.mark.slow
def test_autoattack_is_not_above_pgd(cli, fp_digits):
    pytest.importorskip("torchattacks")
    result = cli("eval", str(fp_digits), "--protocol", "robust", "--attack", "pgd,autoattack", "--images", "4",
                 "--format", "json")
    assert result.code == 0, result.stderr
    metrics = result.json()["metrics"]
    assert metrics["robust_accuracy_autoattack"] <= metrics["robust_accuracy_pgd"]
