"""Every JSON document mltk prints is standard JSON: NaN and infinities become null, with the reason."""

from __future__ import annotations

import json

import pytest

from mltk.cli.render import strict_json


def _strict(text: str):
    def refuse(constant):
        raise ValueError(f"non-standard JSON constant {constant}")

    return json.loads(text, parse_constant=refuse)


def test_non_finite_numbers_become_null_with_where_and_why():
    document = _strict(strict_json({"metrics": {"perplexity": float("nan"), "loss": float("inf"), "ok": 1.5},
                                    "runs": [float("-inf")]}))
    assert document["metrics"] == {"perplexity": None, "loss": None, "ok": 1.5} and document["runs"] == [None]
    assert [u["path"] for u in document["undefined"]] == ["/metrics/perplexity", "/metrics/loss", "/runs/0"]
    assert document["undefined"][0]["reason"] == "not a finite number (nan)"


@pytest.mark.parametrize("args", [["recipes"], ["ls"], ["data", "ls"], ["env"]])
def test_listing_commands_print_strict_json(cli, args):
    result = cli(*args, "--format", "json")
    assert result.code == 0, result.stderr
    _strict(result.stdout)


def test_train_and_eval_print_strict_json(cli, tiny):
    trained = cli("train", "supervised", *tiny, "train.max_steps=2", "--format", "json")
    assert trained.code == 0, trained.stderr
    _strict(trained.stdout)
    evaluated = cli("eval", _strict(trained.stdout)["artifact"], "--format", "json")
    assert evaluated.code == 0, evaluated.stderr
    _strict(evaluated.stdout)
