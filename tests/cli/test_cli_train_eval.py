"""The user's path through the real entry point: train, eval, registry commands, output formats."""

from __future__ import annotations

import json

import yaml
from safetensors import safe_open


def test_train_then_eval_reproduces_the_test_accuracy(cli, mltk_env, tiny):
    trained = cli("train", "supervised", *tiny, "--format", "json")
    assert trained.code == 0, trained.stderr
    results = trained.json()  # stdout is exactly one JSON document
    assert results["artifact"] == "convnet-digits:1"
    assert results["metrics"]["test_images"] == 360
    assert results["metrics"]["test_accuracy"] > 0.5
    assert "epoch 2/2" in trained.stderr  # one summary line per epoch off a terminal

    evaluated = cli("eval", "convnet-digits", "--protocol", "accuracy", "--format", "json")
    assert evaluated.code == 0, evaluated.stderr
    report = evaluated.json()
    assert report["metrics"]["accuracy"] == results["metrics"]["test_accuracy"]
    assert report["data"] == "digits" and report["images"] == 360

    run_dir = mltk_env / "runs" / "supervised"
    (run,) = list(run_dir.iterdir())
    saved = yaml.safe_load((run / "config.yaml").read_text())
    assert saved["model"]["options"]["width"] == 16 and saved["optim"]["lr"] == 0.1
    lines = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [line["epoch"] for line in lines] == [1, 2]
    assert json.loads((run / "results.json").read_text())["artifact"] == "convnet-digits:1"

    weights = mltk_env / "home" / "artifacts" / "convnet-digits" / "1" / "model.safetensors"
    with safe_open(weights, "pt") as handle:
        meta = handle.metadata()
    assert meta["engine"] == "supervised" and json.loads(meta["arch"])["arch"] == "convnet"
    assert meta["parent"] == "dataset:digits"


def test_eval_threshold_exit_codes_and_quiet(cli, tiny):
    assert cli("train", "supervised", *tiny, "--format", "quiet").stdout.strip() == "convnet-digits:1"
    below = cli("eval", "convnet-digits:1", "--min", "1.01", "--format", "json")
    assert below.code == 4
    assert below.json()["threshold"] == {"metric": "accuracy", "min": 1.01, "passed": False}
    assert "below --min" in below.stderr
    above = cli("eval", "convnet-digits@best", "--min", "0.1", "--format", "quiet")
    assert above.code == 0 and 0.1 <= float(above.stdout) <= 1.0
    assert cli("eval", "convnet-digits", "--metric", "nope").code == 2


def test_registry_commands(cli, mltk_env, tiny):
    cli("train", "supervised", *tiny, "name=digits-small")
    cli("train", "supervised", *tiny, "name=digits-small", "seed=1")
    listing = cli("ls", "--format", "json").json()
    assert [r["ref"] for r in listing] == ["digits-small:1", "digits-small:2"]
    assert "latest" in listing[1]["aliases"] and any("best" in r["aliases"] for r in listing)
    assert cli("ls", "--format", "quiet").stdout.split() == ["digits-small:1", "digits-small:2"]

    shown = cli("show", "digits-small:1", "--format", "json").json()
    assert shown["card"]["arch"]["args"]["width"] == 16
    assert shown["card"]["lineage"] == {"parent": "dataset:digits", "relation": "trained"}
    assert set(shown["card"]["files"]) == {"model.safetensors"}
    assert "test_accuracy" in cli("show", "digits-small:1").stdout

    assert cli("verify", "digits-small:2").code == 0
    assert cli("alias", "digits-small:1", "prod").code == 0
    assert cli("eval", "digits-small@prod", "--format", "quiet").code == 0

    out = mltk_env / "exported"
    exported = cli("export", "digits-small:1", "-o", str(out))
    assert exported.code == 0 and (out / "card.json").is_file()
    from_folder = cli("eval", str(out), "--format", "json")
    from_file = cli("eval", str(out / "model.safetensors"), "--format", "json")
    from_registry = cli("eval", "digits-small:1", "--format", "json")
    assert (from_folder.json()["metrics"] == from_file.json()["metrics"] == from_registry.json()["metrics"])

    assert cli("rm", "digits-small").code == 2  # two versions: must name one or pass --all
    assert cli("rm", "digits-small:1", "--format", "quiet").stdout.strip() == "digits-small:1"
    assert cli("rm", "digits-small", "--all").code == 0
    assert cli("ls", "--format", "json").json() == []


def test_recipes_cp_env_and_data_ls(cli, mltk_env):
    recipes = cli("recipes", "--format", "json").json()
    assert "supervised" in [r["name"] for r in recipes["recipes"]]
    assert "accuracy" in [p["name"] for p in recipes["protocols"]]
    assert {"convnet", "resnet20", "mobilenet_v2"} <= {a["name"] for a in recipes["architectures"]}

    dest = mltk_env / "my.yaml"
    assert cli("cp", "supervised/digits", str(dest)).code == 0
    written = dest.read_text()
    assert written.startswith("# mltk train supervised")
    tree = yaml.safe_load(written)
    assert tree["optim"]["lr"] == 0.05 and "val_holdout" in tree["data"]  # every key spelled out
    assert cli("cp", "supervised", str(dest)).code == 2  # exists
    edited = written.replace("epochs: 30", "epochs: 1")
    dest.write_text(edited)
    run = cli("train", "supervised", "--config", str(dest), "model.options.width=8", "--format", "json")
    assert run.code == 0, run.stderr
    saved = yaml.safe_load(open(run.json()["run_dir"] + "/config.yaml"))
    assert saved["train"]["epochs"] == 1 and saved["model"]["options"]["width"] == 8

    env = cli("env", "--format", "json").json()
    assert env["torch"] and env["MLTK_HOME"] == str(mltk_env / "home")
    assert "Copy and paste" in cli("env").stdout

    datasets = cli("data", "ls", "--format", "json").json()
    digits = next(d for d in datasets if d["name"] == "digits")
    assert digits["found"] is True
    assert cli("data", "ls", "--format", "quiet").stdout.split() == ["digits"]


def test_progress_and_messages_stay_off_stdout(cli, tiny):
    result = cli("train", "supervised", *tiny, "--format", "json")
    json.loads(result.stdout)
    assert "data: digits" in result.stderr
    quiet = cli("train", "supervised", *tiny, "--format", "quiet")
    assert quiet.stderr == "" and quiet.stdout.strip() == "convnet-digits:2"


def test_validation_holdout_is_scored_every_epoch_and_reused_by_eval(cli, tiny):
    result = cli("train", "supervised", *tiny, "data.val_holdout=0.2", "data.holdout_seed=7", "--format", "json")
    assert result.code == 0, result.stderr
    assert "1150 train, 287 val, 360 test" in result.stderr  # 20% of the 1,437 train images held out
    run = result.json()
    lines = [json.loads(line) for line in open(run["run_dir"] + "/metrics.jsonl")]
    assert all("val_accuracy" in line for line in lines)
    val = cli("eval", run["artifact"], "--split", "val", "--format", "json").json()
    assert val["images"] == 287
    assert val["metrics"]["accuracy"] == run["metrics"]["val_accuracy"]
