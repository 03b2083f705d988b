"""Benchmarks of the oriented detection engine (issue 14): benchmarks/results/detect.md is written by hand from them.

Sections (each prints one JSON document and stores it in $MLTK_DETECT_WORK/<section>.json,
default /tmp/mltk-detect-bench):

    OMP_NUM_THREADS=1 python benchmarks/detect.py devkit            # our DOTA mAP vs DOTA_devkit's algorithm
    OMP_NUM_THREADS=1 python benchmarks/detect.py seeds --seeds 0 1 2 --timeout 900 [--variants ...] [KEY=VALUE ...]
    OMP_NUM_THREADS=1 python benchmarks/detect.py uncertain --seeds 0 1 2   # after seeds: its artifacts
    OMP_NUM_THREADS=1 python benchmarks/detect.py strict --prefix bench-uagdet-refine-all   # AP70 of other runs
    python benchmarks/detect.py speed                                # ratios against torchvision, one process
    OMP_NUM_THREADS=1 python benchmarks/detect.py nms                # rotated NMS's IoU-bound prefilter
    OMP_NUM_THREADS=1 python benchmarks/detect.py memory             # peak RSS of `mltk detect`, 1000-4000 px

devkit
    DOTA_devkit's ``dota_evaluation_task1.py`` (CAPTAIN-WHU/DOTA_devkit, MIT) cannot run here: it needs
    its SWIG-compiled ``polyiou`` and Python 2 era numpy (``np.bool``). ``devkit_voc_eval`` below is
    its algorithm written out again for this benchmark (no code copied): the label parser keeps
    lines of 9+ fields and reads ``difficult`` only from a 10th field; detections are sorted by
    ``np.argsort(-confidence)``; ground truth whose horizontal box (with the devkit's +1 pixel
    convention) overlaps the detection's is compared by polygon IoU (shapely here, ``polyiou`` there),
    ``ovmax > 0.5`` matches; VOC07 11-point AP or the all-point area. It reads the very
    ``Task1_<class>.txt`` files mltk writes, so both sides score the same text. The detections are
    the shared label files' objects, perturbed (shift, scale, turn), rescored at random, with
    duplicates, wrong classes and random false positives added. The section also checks our
    rotated IoU against shapely on 10,000 random box pairs (degenerate, touching, nested included).

seeds
    ``mltk train oriented-rcnn`` and ``mltk train uagdet`` (preset ``tiny``: DOTA's P1888, real, 712 x 557,
    64 vehicles; with ``data.val_side=bottom`` its top three quarters train and its bottom quarter is held
    out), same backbone, schedule and seeds, each in its own process under ``timeout``; the held-out mAP is
    the training run's ``val_mAP``. ``--variants refine-all`` runs the ``graph.refine=all`` ablation.

uncertain
    The seeds' artifacts again: their held-out mAP at IoU 0.5 and 0.7, VOC07 and area (AP50 can sit at
    its ceiling); and every held-out object pooled at its labelled box, classified by the base detector
    and by UAGDet: accuracy on all of them and on those the base head is uncertain about.

speed
    One process, side by side on the same 512 x 512 crops of P1888 (batch 2): the seeds section's
    seed-0 detectors (their training step and inference images/s; UAGDet against its base) and
    torchvision's ``fasterrcnn_mobilenet_v3_large_fpn(weights=None, weights_backbone=None)`` with
    its resize set to the same size (horizontal boxes). An untrained detector of ours is no fair
    subject: its thousands of near-uniform class scores all pass the 0.05 threshold into rotated
    NMS. Ratios are what to read; the machine is shared.

memory
    ``mltk detect`` of a W x W image (P1888 tiled) in a child process; its peak resident memory
    from ``resource.getrusage(RUSAGE_CHILDREN)``, for growing W, against the decoded image's bytes.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
SHARED_DOTA = ROOT.parent / "shared" / "data" / "dota"
WORK = Path(os.environ.get("MLTK_DETECT_WORK", "/tmp/mltk-detect-bench"))
# The shared label files with their own images or alone; P0770 is in two folders: the first is kept.
LABEL_FOLDERS = ("dota_devkit_example/labelTxt", "dota_devkit_example/labelTxt_no_image",
                 "dotadevkit_ashnair1/labelTxt")


def machine() -> dict:
    return {"machine": platform.machine(), "cpus": os.cpu_count(), "torch_threads": torch.get_num_threads(),
            "torch": torch.__version__, "python": platform.python_version(),
            "load_average": [round(x, 2) for x in os.getloadavg()]}


def save(section: str, result: dict) -> None:
    WORK.mkdir(parents=True, exist_ok=True)
    result = {"section": section, "machine": machine(), **result}
    (WORK / f"{section}.json").write_text(json.dumps(result, indent=1))
    print(json.dumps(result, indent=1))


# ================================================================ devkit

def devkit_parse_gt(path: Path) -> list[dict]:
    """The devkit's ``parse_gt``: lines of fewer than 9 fields (the header) are skipped."""
    objects = []
    for line in path.read_text().splitlines():
        fields = line.strip().split(" ")
        if len(fields) < 9:
            continue
        difficult = int(fields[9]) if len(fields) == 10 else 0
        objects.append({"name": fields[8], "difficult": difficult, "bbox": [float(v) for v in fields[:8]]})
    return objects


def devkit_voc_ap(rec: np.ndarray, prec: np.ndarray, use_07_metric: bool) -> float:
    if use_07_metric:
        ap = 0.0
        for t in np.arange(0.0, 1.1, 0.1):
            p = 0 if np.sum(rec >= t) == 0 else np.max(prec[rec >= t])
            ap = ap + p / 11.0
        return float(ap)
    mrec = np.concatenate(([0.0], rec, [1.0]))
    mpre = np.concatenate(([0.0], prec, [0.0]))
    for i in range(mpre.size - 1, 0, -1):
        mpre[i - 1] = np.maximum(mpre[i - 1], mpre[i])
    i = np.where(mrec[1:] != mrec[:-1])[0]
    return float(np.sum((mrec[i + 1] - mrec[i]) * mpre[i + 1]))


def shapely_polygon_iou(a, b) -> float:
    from shapely.geometry import Polygon

    pa, pb = Polygon(np.reshape(a, (4, 2))), Polygon(np.reshape(b, (4, 2)))
    inter = pa.intersection(pb).area
    union = pa.area + pb.area - inter
    return inter / union if union > 0 else 0.0


def devkit_voc_eval(task1_file: Path, annotations: dict[str, Path], classname: str,
                    use_07_metric: bool, ovthresh: float = 0.5) -> float:
    """The devkit's ``voc_eval`` for one class: AP of the detections in ``task1_file``."""
    recs = {name: devkit_parse_gt(path) for name, path in annotations.items()}
    class_recs, npos = {}, 0
    for name in annotations:
        objects = [o for o in recs[name] if o["name"] == classname]
        difficult = np.array([o["difficult"] for o in objects]).astype(bool)
        npos += int(sum(~difficult))
        class_recs[name] = {"bbox": np.array([o["bbox"] for o in objects]), "difficult": difficult,
                            "det": [False] * len(objects)}
    lines = [line.strip().split(" ") for line in task1_file.read_text().splitlines() if line.strip()]
    image_ids = [x[0] for x in lines]
    confidence = np.array([float(x[1]) for x in lines])
    boxes = np.array([[float(z) for z in x[2:]] for x in lines])
    order = np.argsort(-confidence)
    boxes = boxes[order, :] if len(order) else boxes
    image_ids = [image_ids[x] for x in order]
    tp, fp = np.zeros(len(image_ids)), np.zeros(len(image_ids))
    for d, image_id in enumerate(image_ids):
        record, bb, ovmax, jmax = class_recs[image_id], boxes[d].astype(float), -np.inf, 0
        truth = record["bbox"].astype(float)
        if truth.size > 0:
            gx0, gy0 = truth[:, 0::2].min(1), truth[:, 1::2].min(1)
            gx1, gy1 = truth[:, 0::2].max(1), truth[:, 1::2].max(1)
            bx0, by0, bx1, by1 = bb[0::2].min(), bb[1::2].min(), bb[0::2].max(), bb[1::2].max()
            iw = np.maximum(np.minimum(gx1, bx1) - np.maximum(gx0, bx0) + 1.0, 0.0)
            ih = np.maximum(np.minimum(gy1, by1) - np.maximum(gy0, by0) + 1.0, 0.0)
            inters = iw * ih
            union = (bx1 - bx0 + 1.0) * (by1 - by0 + 1.0) + (gx1 - gx0 + 1.0) * (gy1 - gy0 + 1.0) - inters
            keep_index = np.where(inters / union > 0)[0]
            if len(keep_index):
                overlaps = [shapely_polygon_iou(truth[k], bb) for k in keep_index]
                ovmax = np.max(overlaps)
                jmax = keep_index[int(np.argmax(overlaps))]
        if ovmax > ovthresh:
            if not record["difficult"][jmax]:
                if not record["det"][jmax]:
                    tp[d] = 1.0
                    record["det"][jmax] = 1
                else:
                    fp[d] = 1.0
        else:
            fp[d] = 1.0
    fp, tp = np.cumsum(fp), np.cumsum(tp)
    rec = tp / float(npos)
    prec = tp / np.maximum(tp + fp, np.finfo(np.float64).eps)
    return devkit_voc_ap(rec, prec, use_07_metric)


def perturbed_detections(ground_truth: dict, generator: np.random.Generator):
    """Detections made from the ground truth: each object found 0-2 times, jittered, rescored; plus noise."""
    from mltk.engines.detect.boxes import box_to_polygon, polygon_to_box
    from mltk.engines.detect.dota import DotaDetections

    found = {}
    for image_id, truth in ground_truth.items():
        boxes = polygon_to_box(truth.polygons).numpy()
        copies = generator.choice([0, 1, 1, 1, 2], size=len(boxes))
        rows, labels = [], []
        for box, label, count in zip(boxes, truth.labels.numpy(), copies, strict=True):
            for _ in range(count):
                size = max(box[2], box[3])
                moved = box.copy()
                moved[:2] += generator.normal(0, 0.12, 2) * size
                moved[2:4] *= np.exp(generator.normal(0, 0.15, 2))
                moved[4] += generator.normal(0, 0.2)
                rows.append(moved)
                wrong_class = generator.random() < 0.1
                labels.append(int(generator.integers(0, 15)) if wrong_class else int(label))
        # false positives anywhere near the objects, of the image's classes
        low, high = boxes[:, :2].min(0), boxes[:, :2].max(0)
        for _ in range(max(1, len(boxes) // 4)):
            rows.append(np.array([*generator.uniform(low, high), *generator.uniform(8, 60, 2),
                                  generator.uniform(-math.pi / 2, math.pi / 2)]))
            labels.append(int(generator.choice(truth.labels.numpy())))
        boxes_t = torch.tensor(np.array(rows), dtype=torch.float64)
        found[image_id] = DotaDetections(box_to_polygon(boxes_t), torch.tensor(labels),
                                         torch.tensor(generator.random(len(rows))), truth.classes)
    return found


def random_box_pairs(count: int, generator: np.random.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Random le90 box pairs, a fifth each degenerate (zero side), nested, touching, identical or random."""
    a = np.column_stack([generator.uniform(0, 100, (count, 2)), generator.uniform(0.5, 40, (count, 2)),
                         generator.uniform(-math.pi / 2, math.pi / 2, count)])
    b = a.copy()
    b[:, :2] += generator.normal(0, 10, (count, 2))
    b[:, 2:4] = generator.uniform(0.5, 40, (count, 2))
    b[:, 4] = generator.uniform(-math.pi / 2, math.pi / 2, count)
    kind = np.arange(count) % 5
    b[kind == 0, 3] = 0.0  # degenerate: a segment
    nested = kind == 1
    b[nested, :2], b[nested, 2:4], b[nested, 4] = a[nested, :2], a[nested, 2:4] * 0.5, a[nested, 4]
    touching = kind == 2  # b's edge on a's edge: shifted by a's width along its own axis
    theta = a[touching, 4]
    b[touching, 0] = a[touching, 0] + a[touching, 2] * np.cos(theta)
    b[touching, 1] = a[touching, 1] + a[touching, 2] * np.sin(theta)
    b[touching, 2:5] = a[touching, 2:5]
    b[kind == 3] = a[kind == 3]
    return torch.tensor(a), torch.tensor(b)


def section_devkit(args) -> None:
    import tempfile

    from mltk.engines.detect.boxes import box_to_corners
    from mltk.engines.detect.dota import (
        read_label_file,
        read_task1_submission,
        write_task1_submission,
    )
    from mltk.engines.detect.evaluation import evaluate_task1
    from mltk.engines.detect.iou import rotated_iou

    annotations: dict[str, Path] = {}
    for folder in LABEL_FOLDERS:
        for path in sorted((SHARED_DOTA / folder).glob("*.txt")):
            annotations.setdefault(path.stem, path)
    ground_truth = {name: read_label_file(path) for name, path in annotations.items()}
    present = sorted({n for t in ground_truth.values() for n, d in zip(t.class_names(), t.difficult.tolist(),
                                                                          strict=True) if d == 0},
                     key=ground_truth["P1888"].classes.index)
    trials = []
    for trial in range(args.trials):
        generator = np.random.default_rng(trial)
        detections = perturbed_detections(ground_truth, generator)
        with tempfile.TemporaryDirectory() as folder:
            write_task1_submission(folder, detections)
            read_back = read_task1_submission(folder)
            for use_07 in (True, False):
                ours = evaluate_task1(ground_truth, read_back, classes=tuple(present), use_07_metric=use_07)
                theirs = {name: devkit_voc_eval(Path(folder) / f"Task1_{name}.txt", annotations, name, use_07)
                          for name in present}
                differences = [abs(ours.per_class[name].ap - theirs[name]) for name in present]
                trials.append({"trial": trial, "metric": "VOC07 11-point" if use_07 else "area",
                               "detections": sum(len(d) for d in read_back.values()),
                               "ours_mAP": ours.mean_ap, "devkit_mAP": float(np.mean(list(theirs.values()))),
                               "max_class_AP_difference": max(differences)})
    generator = np.random.default_rng(123)
    a, b = random_box_pairs(10_000, generator)
    ours_iou = rotated_iou(a, b).numpy()
    corners_a, corners_b = box_to_corners(a).numpy(), box_to_corners(b).numpy()
    reference = np.array([shapely_polygon_iou(x, y) for x, y in zip(corners_a, corners_b, strict=True)])
    save("devkit", {
        "images": len(annotations), "objects": sum(len(t) for t in ground_truth.values()), "classes": present,
        "trials": trials,
        "max_mAP_difference": max(abs(t["ours_mAP"] - t["devkit_mAP"]) for t in trials),
        "max_class_AP_difference": max(t["max_class_AP_difference"] for t in trials),
        "iou_pairs": len(reference), "iou_max_abs_difference_vs_shapely": float(np.abs(ours_iou - reference).max()),
        "iou_pairs_by_kind": "random, zero-width, nested, edge-touching, identical (2000 each)",
    })


# ================================================================ seeds

def run_training(recipe: str, seed: int, overrides: list[str], timeout: int) -> dict:
    env = dict(os.environ, MLTK_HOME=str(WORK / "home"), MLTK_RUNS=str(WORK / "runs"),
               MLTK_DATA=str(SHARED_DOTA.parent), CI="1", OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", "1"))
    suffix = "-refine-all" if "graph.refine=all" in overrides else ""
    command = ["timeout", str(timeout), sys.executable, "-m", "mltk", "train", recipe, f"seed={seed}",
               f"name=bench-{recipe}{suffix}-{seed}", *overrides, "--format", "json"]
    started = time.perf_counter()
    proc = subprocess.run(command, env=env, text=True, capture_output=True)
    seconds = time.perf_counter() - started
    if proc.returncode != 0:
        return {"recipe": recipe, "seed": seed, "exit_code": proc.returncode, "seconds": round(seconds, 1),
                "stderr_tail": proc.stderr[-600:]}
    out = json.loads(proc.stdout)
    metrics = out["metrics"]
    # The last logged training losses, from the run folder's metrics.jsonl.
    logged = [json.loads(line) for line in (Path(out["run_dir"]) / "metrics.jsonl").read_text().splitlines()
              if line.strip()]
    last = next((row for row in reversed(logged) if "train_loss" in row), {})
    return {"recipe": recipe, "seed": seed, "seconds": round(seconds, 1), "command": " ".join(command[3:]),
            "artifact": out["artifact"], "val_mAP": metrics.get("val_mAP"), "val_AP": metrics.get("val_AP"),
            "val_refined_fraction": metrics.get("val_refined_fraction"),
            "val_detections": metrics.get("val_detections"),
            "last_logged": {k: round(v, 4) for k, v in last.items() if k.startswith("train_") or k == "step"}}


def section_seeds(args) -> None:
    runs = []
    known = {"base": ("oriented-rcnn", []), "uagdet": ("uagdet", []), "refine-all": ("uagdet", ["graph.refine=all"])}
    variants = [known[name] for name in args.variants]
    for seed in args.seeds:
        for recipe, extra in variants:
            result = run_training(recipe, seed, [*args.overrides, *extra], args.timeout)
            result["variant"] = recipe + ("" if not extra else " " + " ".join(extra))
            runs.append(result)
            print(json.dumps(result), flush=True)
    summary = {}
    for variant in dict.fromkeys(run["variant"] for run in runs):
        values = [run["val_mAP"] for run in runs if run["variant"] == variant and run.get("val_mAP") is not None]
        summary[variant] = {"mAP_mean": statistics.fmean(values) if values else None,
                            "mAP_std": statistics.stdev(values) if len(values) > 1 else None, "runs": len(values)}
    save("seeds", {"overrides": args.overrides, "runs": runs, "summary": summary})


# ================================================================ uncertain

def classify_ground_truth(model, region) -> tuple[torch.Tensor, torch.Tensor]:
    """Each labelled object of ``region`` as a RoI (its own box): the model's class (background = C) and the
    base head's uncertainty. UAGDet refines the uncertain ones from the certain ones, as in detection."""
    from mltk.engines.detect.boxes import polygon_to_box
    from mltk.engines.detect.inference import pad_to_multiple
    from mltk.engines.detect.roi_head import pool_rois
    from mltk.engines.detect.uagdet import graph_edges, split_nodes

    model.eval()
    with torch.no_grad():
        levels = model.pyramid(pad_to_multiple(region.image.float() / 255)[None])
        boxes = polygon_to_box(region.labels.polygons).float()
        rois = torch.cat([torch.zeros(len(boxes), 1), boxes], 1)
        representation = model.box_head.represent(pool_rois(levels, model.pyramid.strides, rois,
                                                            model.spec.roi.pooled_size))
        logits, _ = model.box_head.predict(representation)
        uncertainty = model.uncertainty(logits, representation)
        if model.refiner is not None:
            graph = model.spec.graph
            sources, targets = split_nodes(uncertainty, graph)
            edges = graph_edges(rois[:, 1:3], representation, rois[:, 0].long(), sources, targets,
                                neighbours=graph.neighbours, radius=graph.radius)
            refined, nodes = model.refiner(representation, rois[:, 1:3], *edges, graph.radius)
            logits = logits.index_copy(0, nodes, model.box_head.predict(refined[nodes])[0])
    return logits.argmax(1), uncertainty


def stricter_map(model, regions, data: dict) -> dict:
    """Held-out mAP at IoU 0.5 and 0.7, VOC07 11-point and area: more resolution than AP50 near its ceiling."""
    from mltk.engines.detect.dota import DotaDetections
    from mltk.engines.detect.evaluation import evaluate_task1
    from mltk.engines.detect.inference import detect_image

    model.eval()
    detections = {}
    for region in regions:
        found = detect_image(model, region.image, patch_size=data["patch_size"], overlap=data["overlap"])
        detections[region.region_id] = DotaDetections.from_boxes(found.boxes, found.labels, found.scores,
                                                                 model.spec.classes)
    truth = {region.region_id: region.labels for region in regions}
    present = tuple(sorted({n for t in truth.values() for n in t.class_names()}, key=model.spec.classes.index))
    return {f"AP{int(iou * 100)} {'voc07' if use_07 else 'area'}":
            evaluate_task1(truth, detections, classes=present, iou_threshold=iou, use_07_metric=use_07).mean_ap
            for iou in (0.5, 0.7) for use_07 in (True, False)}


def section_strict(args) -> None:
    """``stricter_map`` of the artifacts ``PREFIX-SEED`` in this work folder's registry (the refine-all runs)."""
    from mltk.core.registry import Registry
    from mltk.engines.detect.artifact import load_detector
    from mltk.engines.detect.data import resolve_dota_folder, split_regions

    registry = Registry(WORK / "home")
    rows = []
    for seed in args.seeds:
        loaded = load_detector(f"{args.prefix}-{seed}", registry=registry)
        data = loaded.card["config"]["data"]
        folder = resolve_dota_folder(str(SHARED_DOTA.parent / data["name"].removeprefix("dota:")))
        _, regions = split_regions(folder, classes=data["classes"], val_fraction=data["val_fraction"],
                                   min_inside=data["min_inside"], val_side=data.get("val_side", "right"))
        rows.append({"seed": seed, **stricter_map(loaded.model, regions, data)})
        print(json.dumps(rows[-1]), flush=True)
    summary = {key: {"mean": statistics.fmean(row[key] for row in rows),
                     "std": statistics.stdev(row[key] for row in rows) if len(rows) > 1 else None}
               for key in rows[0] if key != "seed"}
    save("strict", {"prefix": args.prefix, "rows": rows, "summary": summary})


def section_uncertain(args) -> None:
    from mltk.core.registry import Registry
    from mltk.engines.detect.artifact import load_detector
    from mltk.engines.detect.data import resolve_dota_folder, split_regions

    os.environ["MLTK_HOME"] = str(WORK / "home")
    registry = Registry(WORK / "home")
    rows = []
    for seed in args.seeds:
        base = load_detector(f"bench-oriented-rcnn-{seed}", registry=registry)
        data = base.card["config"]["data"]
        _, regions = split_regions(resolve_dota_folder(str(SHARED_DOTA.parent / data["name"].removeprefix("dota:"))),
                                   classes=data["classes"], val_fraction=data["val_fraction"],
                                   min_inside=data["min_inside"], val_side=data.get("val_side", "right"))
        row = {"seed": seed}
        for name in ("oriented-rcnn", "uagdet"):
            model = (base if name == "oriented-rcnn" else load_detector(f"bench-uagdet-{seed}", registry=registry)).model
            row[f"{name} stricter mAP"] = stricter_map(model, regions, data)
            predicted, truth, base_uncertain = [], [], []
            for region in regions:
                scored = region.labels.difficult == 0
                classes, _ = classify_ground_truth(model, region)
                _, uncertainty = classify_ground_truth(base.model, region)
                predicted.append(classes[scored])
                truth.append(region.labels.labels[scored])
                base_uncertain.append(uncertainty[scored] > args.tau)
            predicted, truth, base_uncertain = torch.cat(predicted), torch.cat(truth), torch.cat(base_uncertain)
            correct = predicted == truth
            row[name] = {"accuracy_all": float(correct.float().mean()),
                         "accuracy_on_base_uncertain": float(correct[base_uncertain].float().mean())
                         if base_uncertain.any() else None}
            row["objects"], row["base_uncertain"] = int(truth.numel()), int(base_uncertain.sum())
        rows.append(row)
        print(json.dumps(row), flush=True)
    save("uncertain", {"tau": args.tau, "rows": rows,
                       "note": "held-out non-difficult objects, each pooled at its labelled box; background "
                               "counts as wrong; 'base uncertain': normalised entropy of the base head > tau"})


# ================================================================ speed

def p1888_crops(size: int, count: int) -> torch.Tensor:
    from mltk.engines.detect.data import decode_image

    image = decode_image(SHARED_DOTA / "dota_devkit_example" / "images" / "P1888.png")
    crops = [image[:, top:top + size, left:left + size] for top in (0, image.shape[1] - size)
             for left in (0, image.shape[2] - size)]
    return torch.stack([crops[i % len(crops)] for i in range(count)]).float() / 255


def _timed(fn, repeats: int) -> float:
    fn()  # warm-up
    started = time.perf_counter()
    for _ in range(repeats):
        fn()
    return (time.perf_counter() - started) / repeats


def section_speed(args) -> None:
    import torchvision

    from mltk.core.registry import Registry
    from mltk.engines.detect.artifact import load_detector
    from mltk.engines.detect.boxes import horizontal_bounds, polygon_to_box
    from mltk.engines.detect.data import labels_in_window
    from mltk.engines.detect.dota import read_label_file
    from mltk.engines.detect.model import total_loss
    from mltk.engines.detect.patches import PatchWindow

    torch.manual_seed(0)
    size, batch = args.size, 2
    images = p1888_crops(size, batch)
    labels = read_label_file(SHARED_DOTA / "dota_devkit_example" / "labelTxt" / "P1888.txt")
    inside = labels_in_window(labels, PatchWindow(0, 0, size, size), 0.7, keep_cut_as_difficult=False)
    boxes = polygon_to_box(inside.polygons).float()
    targets = [{"boxes": boxes, "labels": inside.labels} for _ in range(batch)]
    registry = Registry(WORK / "home")

    def train_step(model, forward):
        optimizer = torch.optim.SGD(model.parameters(), lr=1e-5, momentum=0.9)
        model.train()

        def step():
            loss = forward(model)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        return _timed(step, args.repeats)

    def inference(model, forward):
        model.eval()
        with torch.no_grad():
            return batch / _timed(lambda: forward(model), args.repeats)

    results = {}
    # Inference first (training steps change the weights, a little, at lr 1e-5).
    loaded = {name: load_detector(ref, registry=registry).model for name, ref in
              (("oriented-rcnn", args.base), ("uagdet", args.uagdet))}
    torchvision_model = torchvision.models.detection.fasterrcnn_mobilenet_v3_large_fpn(
        weights=None, weights_backbone=None, num_classes=len(loaded["uagdet"].spec.classes) + 1,
        min_size=size, max_size=size)
    tv_targets = [{"boxes": horizontal_bounds(t["boxes"]), "labels": t["labels"] + 1} for t in targets]
    tv = "torchvision fasterrcnn_mobilenet_v3_large_fpn"
    results[tv] = {"images_per_s": inference(torchvision_model, lambda m: m(list(images)))}
    for name, model in loaded.items():
        results[name] = {"images_per_s": inference(model, lambda m: m(images, score_threshold=args.score_threshold))}
    results[tv]["train_step_s"] = train_step(torchvision_model, lambda m: sum(m(list(images), tv_targets).values()))
    for name, model in loaded.items():
        results[name]["train_step_s"] = train_step(model, lambda m: total_loss(m(images, targets)))
    for row in results.values():
        row["train_steps_per_s_vs_torchvision"] = results[tv]["train_step_s"] / row["train_step_s"]
        row["images_per_s_vs_torchvision"] = row["images_per_s"] / results[tv]["images_per_s"]
    results["uagdet"]["images_per_s_vs_base"] = results["uagdet"]["images_per_s"] / results["oriented-rcnn"]["images_per_s"]
    spec = loaded["uagdet"].spec
    save("speed", {"input": f"{batch} crops of P1888, {size} x {size}", "repeats": args.repeats,
                   "ours": f"{args.base} and {args.uagdet} (trained by the seeds section): {spec.backbone}, "
                           f"FPN {spec.fpn_channels} channels, {spec.proposals.post_nms} proposals",
                   "torchvision": "weights=None, weights_backbone=None, min_size=max_size=size, defaults otherwise",
                   "score_threshold": args.score_threshold, "results": results})


# ================================================================ nms

def section_nms(args) -> None:
    """``rotated_overlaps`` with and without the IoU-bound prefilter, on clustered boxes like proposals."""
    from mltk.engines.detect.iou import rotated_overlaps

    generator = torch.Generator().manual_seed(0)
    rows = []
    for count in args.boxes:
        centres = (torch.rand(count // 20, 2, generator=generator) * 256).repeat_interleave(20, 0)
        boxes = torch.cat([centres + torch.randn(count, 2, generator=generator) * 6,
                           torch.rand(count, 2, generator=generator) * 40 + 4,
                           (torch.rand(count, 1, generator=generator) - 0.5) * math.pi], 1)
        for threshold in (0.1, 0.3, 0.8):
            timed = {}
            for prefilter in (False, True):
                started = time.perf_counter()
                found = rotated_overlaps(boxes, above=threshold, prefilter=prefilter)
                timed[prefilter] = (time.perf_counter() - started, found)
            identical = all(torch.equal(a, b) for a, b in zip(timed[False][1], timed[True][1], strict=True))
            rows.append({"boxes": count, "threshold": threshold, "all_meeting_pairs_s": timed[False][0],
                         "prefiltered_s": timed[True][0], "speedup": timed[False][0] / timed[True][0],
                         "identical": identical, "pairs_above": int(timed[True][1][0].numel())})
            print(json.dumps(rows[-1]), flush=True)
    save("nms", {"rows": rows})


# ================================================================ memory

MEMORY_CHILD = r"""
import resource, subprocess, sys
proc = subprocess.run(sys.argv[1:], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
peak_kib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
print(proc.returncode, peak_kib, proc.stderr[-300:].replace(chr(10), ' '))
"""


def section_memory(args) -> None:
    from PIL import Image

    source = np.array(Image.open(SHARED_DOTA / "dota_devkit_example" / "images" / "P1888.png").convert("RGB"))
    WORK.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, MLTK_HOME=str(WORK / "home"), CI="1")
    rows = []
    for side in args.sides:
        reps = (math.ceil(side / source.shape[0]), math.ceil(side / source.shape[1]), 1)
        path = WORK / f"tiled_{side}.png"
        Image.fromarray(np.tile(source, reps)[:side, :side]).save(path)
        command = [sys.executable, "-m", "mltk", "detect", str(path), "-o", str(WORK / f"out_{side}"),
                   "--model", args.model, "--patch-size", str(args.patch_size), "--overlap", str(args.overlap),
                   "--score-threshold", "0.3"]
        started = time.perf_counter()
        out = subprocess.run([sys.executable, "-c", MEMORY_CHILD, *command], env=env, text=True,
                             capture_output=True, check=True).stdout.split(maxsplit=2)
        rows.append({"side": side, "exit_code": int(out[0]), "peak_rss_MiB": int(out[1]) / 1024,
                     "decoded_image_MiB": side * side * 3 / 2**20, "seconds": round(time.perf_counter() - started, 1),
                     "stderr_tail": out[2] if len(out) > 2 else ""})
        print(json.dumps(rows[-1]), flush=True)
    save("memory", {"model": args.model, "patch_size": args.patch_size, "overlap": args.overlap, "runs": rows,
                    "max_rss_of_this_process_MiB": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sections = parser.add_subparsers(dest="section", required=True)
    devkit = sections.add_parser("devkit")
    devkit.add_argument("--trials", type=int, default=3)
    seeds = sections.add_parser("seeds")
    seeds.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    seeds.add_argument("--timeout", type=int, default=900, help="seconds per training run")
    seeds.add_argument("--variants", nargs="+", choices=["base", "uagdet", "refine-all"], default=["base", "uagdet"],
                       help="refine-all: uagdet with graph.refine=all (the ablation)")
    seeds.add_argument("overrides", nargs="*", default=[], help="config overrides for every run (KEY=VALUE)")
    uncertain = sections.add_parser("uncertain")
    uncertain.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    uncertain.add_argument("--tau", type=float, default=0.3)
    strict = sections.add_parser("strict")
    strict.add_argument("--prefix", default="bench-uagdet-refine-all")
    strict.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    speed = sections.add_parser("speed")
    speed.add_argument("--size", type=int, default=512)
    speed.add_argument("--repeats", type=int, default=3)
    speed.add_argument("--base", default="bench-oriented-rcnn-0")
    speed.add_argument("--uagdet", default="bench-uagdet-0")
    speed.add_argument("--score-threshold", type=float, default=0.05)
    nms = sections.add_parser("nms")
    nms.add_argument("--boxes", type=int, nargs="+", default=[500, 2000])
    memory = sections.add_parser("memory")
    memory.add_argument("--model", default="uagdet")
    memory.add_argument("--sides", type=int, nargs="+", default=[1000, 2000, 4000])
    memory.add_argument("--patch-size", type=int, default=512)
    memory.add_argument("--overlap", type=int, default=100)
    args = parser.parse_args()
    {"devkit": section_devkit, "seeds": section_seeds, "uncertain": section_uncertain, "strict": section_strict,
     "speed": section_speed, "nms": section_nms, "memory": section_memory}[args.section](args)


if __name__ == "__main__":
    main()
