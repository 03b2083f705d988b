"""Benchmarks of the sets engine (UMBC, arXiv 2208.12401) against the baselines it beat, on this machine.

    python benchmarks/sets.py consistency   # |full - streamed| over 100 random partitions: every activation and head
    python benchmarks/sets.py memory        # peak tensor memory and elements/s: streamed vs whole set, vs set transformer
    python benchmarks/sets.py gradients     # subset-gradient estimate vs full gradient as draws grow; official-style bias
    python benchmarks/sets.py mog           # clustering NLL vs set size: umbc(SAB), sse, deepsets, set transformer, 3 seeds
    python benchmarks/sets.py modelnet      # point-cloud accuracy and ECE (with / without element dropout), 3 seeds
    python benchmarks/sets.py pma           # PMA with / without the paper's rFF (Linear + ReLU): accuracy, NLL,
                                            # and how many of the rFF's ReLU units are still alive after training
    python benchmarks/sets.py all

Each part prints its figures and merges them into benchmarks/results/sets.json; benchmarks/results/sets.md is
written by hand from them. Training parts run ``mltk train umbc`` in child processes (MLTK_HOME in a
temporary folder), so they measure exactly what users run.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from mltk.core.registry import Registry
from mltk.engines.sets.artifact import load_set_model
from mltk.engines.sets.data import load_point_clouds, sample_mixtures
from mltk.engines.sets.evaluation import consistency_gap, peak_tensor_bytes
from mltk.engines.sets.model import HEADS, SetModel, SetModelSpec
from mltk.engines.sets.set_functions import PMA
from mltk.engines.sets.slots import ACTIVATIONS

RESULTS = Path(__file__).parent / "results" / "sets.json"
SHARED = Path(os.environ.get("MLTK_SHARED_DATA", "/work/shared/data"))


def _model(dtype=torch.float32, **kw) -> SetModel:
    torch.manual_seed(0)
    spec = SetModelSpec(**{"dim_in": 2, "hidden": 64, "slots": 8, "heads": 4, "outputs": 4, "out_features": 5,
                           "head_layers": 2, **kw})
    return SetModel(spec).to(dtype).eval()


def consistency() -> dict:
    out = {}
    for dtype in (torch.float32, torch.float64):
        x = torch.randn(4, 200, 2, generator=torch.Generator().manual_seed(0), dtype=dtype)
        rows = {}
        for activation in ACTIVATIONS:
            for head in HEADS:
                model = _model(dtype, activation=activation, head=head)
                rows[f"umbc/{activation}/{head}"] = consistency_gap(model, x, partitions=100,
                                                                    generator=torch.Generator().manual_seed(1))
        for kind, extra in (("sse", {}), ("deepsets", {"pooling": "sum"}), ("deepsets", {"pooling": "max"}),
                            ("set-transformer", {}), ("set-transformer", {"head": "isab"})):
            model = _model(dtype, kind=kind, **extra)
            name = f"{kind}" + "".join(f"/{v}" for v in extra.values())
            rows[name] = consistency_gap(model, x, partitions=100, generator=torch.Generator().manual_seed(1))
        out[str(dtype).replace("torch.", "")] = rows
        umbc = max(v for k, v in rows.items() if k.startswith("umbc"))
        print(f"{dtype}: umbc worst over {len(ACTIVATIONS)}x{len(HEADS)} = {umbc:.3g}; "
              + ", ".join(f"{k} {v:.3g}" for k, v in rows.items() if not k.startswith("umbc")))
    return out


def _chunks(total: int, chunk: int, dim: int, seed: int):
    g = torch.Generator().manual_seed(seed)
    for start in range(0, total, chunk):  # made on the fly: the stream never exists whole
        yield torch.randn(1, min(chunk, total - start), dim, generator=g)


def memory() -> dict:
    torch.set_num_threads(1)
    umbc = _model(activation="softmax", head="sab")
    st = _model(kind="set-transformer", head="isab")
    st_sab = _model(kind="set-transformer", head="sab")
    out = {"memory_bytes": {}, "elements_per_s": {}}
    with torch.no_grad():
        for total in (10_000, 100_000, 1_000_000):
            _, peak = peak_tensor_bytes(lambda t=total: umbc.encode_stream(_chunks(t, 1000, 2, 0)))
            out["memory_bytes"][f"umbc streamed {total} in chunks of 1000"] = peak
        for total in (1_000, 10_000):
            _, peak = peak_tensor_bytes(lambda t=total: umbc.encode(torch.randn(1, t, 2)))
            out["memory_bytes"][f"umbc whole set {total}"] = peak
            _, peak = peak_tensor_bytes(lambda t=total: st.encode(torch.randn(1, t, 2)))
            out["memory_bytes"][f"set-transformer (ISAB) whole set {total}"] = peak
        for total in (1_000, 10_000):
            x = torch.randn(1, total, 2)
            for name, fn in (("umbc streamed (chunks of 1000)", lambda x=x, t=total: umbc.encode_stream(
                                 x[:, s:s + 1000] for s in range(0, t, 1000))),
                             ("umbc whole set", lambda x=x: umbc.encode(x)),
                             ("set-transformer ISAB whole set", lambda x=x: st.encode(x)),
                             ("set-transformer SAB whole set", lambda x=x: st_sab.encode(x))):
                if "SAB whole" in name and total > 1000 and "ISAB" not in name:
                    continue  # N^2 attention: 10,000^2 x 4 heads does not fit the budget
                fn()
                started, reps = time.perf_counter(), 0
                while time.perf_counter() - started < 1.0:
                    fn()
                    reps += 1
                out["elements_per_s"][f"{name} N={total}"] = total * reps / (time.perf_counter() - started)
        total = 1_000_000
        started = time.perf_counter()
        umbc.encode_stream(_chunks(total, 1000, 2, 0))
        out["elements_per_s"]["umbc streamed N=1000000 (chunks of 1000, generated on the fly)"] = \
            total / (time.perf_counter() - started)
    for k, v in {**out["memory_bytes"], **out["elements_per_s"]}.items():
        print(f"{k}: {v:,.0f}")
    return out


def gradients() -> dict:
    n_all, n = 100, 10
    model = _model(torch.float64, hidden=16, slots=4, heads=2, head="sab", head_layers=1, slot_type="learned",
                   slot_residual=True).train()
    x = torch.randn(2, n_all, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64)

    def loss(encoding):
        return (model.decode(encoding) ** 2).mean()

    def grads():
        return {k: p.grad.clone() for k, p in model.named_parameters() if p.grad is not None}

    model.zero_grad()
    loss(model.encode(x)).backward()
    exact = grads()
    groups = {"extractor": ["extractor."], "keys/values": ["pooler.k.", "pooler.v."],
              "slots/queries": ["pooler.slots", "pooler.q.", "pooler.norm_slots."], "head": ["head.", "output."]}

    def group_error(mean):
        errors = {}
        for group, prefixes in groups.items():
            names = [k for k in exact if any(k.startswith(p) for p in prefixes)]
            diff = torch.cat([(mean[k] - exact[k]).flatten() for k in names]).norm()
            errors[group] = float(diff / torch.cat([exact[k].flatten() for k in names]).norm())
        return errors

    out = {}
    torch.manual_seed(1)
    for method in ("unbiased", "official", "uncorrected"):
        total, rows = None, {}
        for draw in range(1, 401):
            model.zero_grad()
            loss(model.subset_gradient_encoding(x, None, n, 50, correction="unbiased" if method == "unbiased"
                                                else "none")).backward()
            if method == "official":
                model.official_grad_correct(n_all / n)
            g = grads()
            total = g if total is None else {k: total[k] + g[k] for k in total}
            if draw in (25, 100, 400):
                rows[draw] = group_error({k: v / draw for k, v in total.items()})
        out[method] = rows
        for draw, errors in rows.items():
            print(f"{method:11s} draws {draw:5d}: " + "  ".join(f"{k} {v:.4f}" for k, v in errors.items()))
    return out


def _train(args: list[str], home: str) -> dict:
    env = {**os.environ, "MLTK_HOME": f"{home}/home", "MLTK_RUNS": f"{home}/runs", "MLTK_DATA": str(SHARED),
           "CI": "1", "OMP_NUM_THREADS": "1"}
    started = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "mltk", "train", "umbc", *args, "--format", "json"],
                          capture_output=True, text=True, env=env, timeout=1800)
    if proc.returncode:
        raise RuntimeError(proc.stderr[-2000:])
    result = json.loads(proc.stdout)
    result["seconds"] = time.perf_counter() - started
    return result


MOG_MODELS = {
    "umbc (SAB head), 8 grad elements": ["model.kind=umbc", "train.grad_set_size=8"],
    "umbc (SAB head), full gradient": ["model.kind=umbc", "train.grad_set_size=0"],
    "sse alone": ["model.kind=sse", "train.grad_set_size=8"],
    "deepsets (mean)": ["model.kind=deepsets", "model.pooling=mean", "train.grad_set_size=8"],
    "set transformer (SAB)": ["model.kind=set-transformer", "model.head=sab", "train.grad_set_size=0"],
}


def mog(steps: int = 400) -> dict:
    common = ["--preset", "mog", f"train.steps={steps}", "model.hidden=64", "model.head_layers=2",
              "data.set_size=256", "data.test_sets=32", "train.log_every=100"]
    out = {}
    with tempfile.TemporaryDirectory() as home:
        for name, args in MOG_MODELS.items():
            runs = [_train([*common, *args, f"seed={seed}"], home) for seed in range(3)]
            out[name] = {"metrics": [r["metrics"] for r in runs], "seconds": [r["seconds"] for r in runs]}
            means = {k: sum(r["metrics"][k] for r in runs) / 3 for k in runs[0]["metrics"] if k.startswith("test_nll")}
            print(name, {k: round(v, 3) for k, v in means.items()}, f"{sum(out[name]['seconds']) / 3:.0f}s/run")
    return out


MODELNET_MODELS = {
    "umbc (SAB head)": ["model.kind=umbc", "train.element_dropout=0"],
    "umbc (SAB head) + element dropout 0.1": ["model.kind=umbc", "train.element_dropout=0.1"],
    "umbc (SAB head), slot residual on (the earlier preset)": ["model.kind=umbc", "train.element_dropout=0",
                                                               "model.slot_residual=true"],
    "deepsets (max)": ["model.kind=deepsets", "model.pooling=max", "train.grad_set_size=0",
                       "train.element_dropout=0"],
    "set transformer (ISAB)": ["model.kind=set-transformer", "model.head=isab", "train.grad_set_size=0",
                               "train.element_dropout=0"],
}


def modelnet(steps: int = 200) -> dict:
    npz = SHARED / "modelnet" / "modelnet40_nrs3d_subset" / "modelnet40_nrs3d_subset_1024pts.npz"
    if not npz.is_file():
        print(f"skipped: {npz} is absent")
        return {}
    common = ["--preset", "modelnet", f"train.steps={steps}", "model.hidden=64", "train.log_every=100"]
    out = {}
    with tempfile.TemporaryDirectory() as home:
        for name, args in MODELNET_MODELS.items():
            runs = [_train([*common, *args, f"seed={seed}"], home) for seed in range(3)]
            out[name] = {"metrics": [r["metrics"] for r in runs], "seconds": [r["seconds"] for r in runs]}
            keys = [k for k in runs[0]["metrics"] if k.startswith("test_") and "note" not in k]
            means = {k: sum(r["metrics"][k] for r in runs) / 3 for k in keys}
            print(name, {k: round(v, 3) for k, v in means.items()}, f"{sum(out[name]['seconds']) / 3:.0f}s/run")
    return out


def alive_pma_units(model: SetModel, sets: torch.Tensor, batch: int = 16) -> list[int]:
    """Per PMA with an rFF: how many of its ReLU units are positive for at least one row of ``sets``' forward
    passes (a unit that is never positive passes no gradient: it stays dead)."""
    linears = [m.ff[0] for m in model.modules() if isinstance(m, PMA) and isinstance(m.ff, torch.nn.Sequential)]
    peaks = [torch.full((lin.out_features,), -float("inf")) for lin in linears]

    def hook(index):
        def record(_module, _inputs, output):
            peaks[index] = torch.maximum(peaks[index], output.detach().flatten(0, -2).amax(0))
        return record

    handles = [lin.register_forward_hook(hook(i)) for i, lin in enumerate(linears)]
    with torch.no_grad():
        for start in range(0, len(sets), batch):
            model(sets[start:start + batch])
    for handle in handles:
        handle.remove()
    return [int((peak > 0).sum()) for peak in peaks]


PMA_MODELNET = {name: args for name, args in MODELNET_MODELS.items() if not name.startswith("deepsets")}
PMA_MOG = {name: args for name, args in MOG_MODELS.items() if name.startswith(("umbc", "set transformer"))}


def pma(seeds=range(5), mog_seeds=range(3), modelnet_steps: int = 200, mog_steps: int = 400,
        models: tuple[str, ...] = ()) -> dict:
    """Every model with a PMA (or those whose names start with one of ``models``), trained as in ``modelnet``
    and ``mog`` with and without the rFF in front of PMA."""
    forms = {"rFF + ReLU": "model.pma_feedforward=true", "no rFF (official)": "model.pma_feedforward=false"}
    npz = SHARED / "modelnet" / "modelnet40_nrs3d_subset" / "modelnet40_nrs3d_subset_1024pts.npz"
    tasks = {}
    if npz.is_file():
        clouds = load_point_clouds(f"npz:{npz}", points=1024, test_fraction=0.25, seed=0)
        tasks["modelnet"] = (["--preset", "modelnet", f"train.steps={modelnet_steps}", "model.hidden=64",
                              "train.log_every=100"], PMA_MODELNET, seeds, "test_accuracy",
                             torch.cat([clouds.train_points, clouds.test_points]))
    else:
        print(f"modelnet skipped: {npz} is absent")
    probe, _ = sample_mixtures(64, 256, torch.Generator().manual_seed(0), components=4, dims=2)
    tasks["mog"] = (["--preset", "mog", f"train.steps={mog_steps}", "model.hidden=64", "model.head_layers=2",
                     "data.set_size=256", "data.test_sets=32", "train.log_every=100"], PMA_MOG, mog_seeds,
                    "test_nll", probe)
    out = {}
    for task, (common, models_, task_seeds, metric, sets) in tasks.items():
        out[task] = {}
        for name, args in models_.items():
            if models and not name.startswith(models):
                continue
            for form, flag in forms.items():
                row = {"seeds": list(task_seeds), "metrics": [], "alive_units": [], "seconds": []}
                with tempfile.TemporaryDirectory() as home:
                    for seed in task_seeds:
                        result = _train([*common, *args, flag, f"seed={seed}"], home)
                        loaded = load_set_model(result["artifact"], Registry(f"{home}/home"))
                        row["metrics"].append(result["metrics"])
                        row["alive_units"].append(alive_pma_units(loaded.model, sets))
                        row["seconds"].append(result["seconds"])
                out[task][f"{name} / {form}"] = row
                values = [m[metric] for m in row["metrics"]]
                all_dead = sum(any(a == 0 for a in alive) for alive in row["alive_units"])
                print(f"{task} | {name} | {form}: {metric} " + " ".join(f"{v:.3f}" for v in values)
                      + f" (mean {sum(values) / len(values):.3f}); alive rFF units {row['alive_units']}, "
                      f"all dead in {all_dead}/{len(values)}; {sum(row['seconds']) / len(values):.0f} s/run", flush=True)
    return out


def main() -> None:
    parts = {"consistency": consistency, "memory": memory, "gradients": gradients, "mog": mog, "modelnet": modelnet,
             "pma": pma}
    chosen = sys.argv[1:] or ["all"]
    if chosen == ["all"]:
        chosen = list(parts)
    for name in chosen:
        started = time.perf_counter()
        figures = parts[name]()
        print(f"[{name}: {time.perf_counter() - started:.0f} s]")
        # read again just before writing: parts may run in parallel processes
        results = json.loads(RESULTS.read_text()) if RESULTS.is_file() else {}
        results[name] = figures
        results["machine"] = {"cpu_count": os.cpu_count(), "torch": torch.__version__,
                              "python": sys.version.split()[0]}
        RESULTS.write_text(json.dumps(results, indent=1, default=str))


if __name__ == "__main__":
    main()
