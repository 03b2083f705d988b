"""``mltk eval REF --protocol dota [--data dota:PATH]``: DOTA task-1 AP50 per class and mAP of a detector.

Without ``--data`` the detector is scored on the held-out regions of the
data it was trained on, rebuilt from its card (the same split as at the end
of training); with ``--data dota:PATH`` on every labelled image of that
folder, whole. The metric is DOTA_devkit's (``evaluation.py``): VOC07
11-point AP by default, ``--ap-metric area`` for the all-point area. Also
reported: the fraction of RoIs the graph refined and images per second.
"""

from __future__ import annotations

import dataclasses
from typing import Literal

from mltk.core.catalog import EvalRequest, EvalResult, register_protocol
from mltk.core.console import Reporter
from mltk.core.device import resolve_device
from mltk.core.errors import UsageError
from mltk.engines.detect.artifact import load_detector
from mltk.engines.detect.data import Region, resolve_dota_folder, split_regions
from mltk.engines.detect.training import evaluate_regions


@dataclasses.dataclass(frozen=True)
class DotaOptions:
    ap_metric: Literal["voc07", "area"] = "voc07"  # VOC07 11-point (the devkit's) or the all-point area
    patch_size: int | None = None  # default: the detector's
    overlap: int | None = None


@register_protocol("dota", description="DOTA task-1 AP50 per class and mAP of an oriented detector (DOTA_devkit's)")
def dota_protocol(request: EvalRequest, reporter: Reporter) -> EvalResult:
    options = request.parse_options(DotaOptions)
    loaded = load_detector(request.ref)
    data = loaded.card.get("config", {}).get("data", {})
    if request.data:
        if not request.data.startswith("dota:"):
            raise UsageError(f"--data {request.data}: the dota protocol reads dota:PATH folders")
        regions, where = _whole_images(request.data, data), request.data
    else:
        if not data.get("name"):
            raise UsageError(f"{loaded.source}: records no training data", hint="pass --data dota:PATH")
        _, regions = split_regions(resolve_dota_folder(data["name"]), classes=data["classes"],
                                   val_fraction=data["val_fraction"], min_inside=data["min_inside"],
                                   val_side=data.get("val_side", "right"))
        where = f"{data['name']} (held out)"
        if not regions:
            raise UsageError(f"{loaded.source} was trained without a held-out part", hint="pass --data dota:PATH")
    device = resolve_device(request.device)
    reporter.info(f"scoring {loaded.source} on {len(regions)} region(s) of {where}")
    scores = evaluate_regions(loaded.model.to(device), regions, patch_size=options.patch_size or loaded.patch_size,
                              overlap=loaded.overlap if options.overlap is None else options.overlap,
                              device=device, use_07_metric=options.ap_metric == "voc07")
    metrics = {"mAP": scores["mAP"], "refined_fraction": scores["refined_fraction"],
               "images_per_s": scores["images_per_s"]}
    details = {"model": loaded.source, "data": where, "regions": len(regions), "AP": scores["AP"],
               "ground_truth": scores["ground_truth"], "metric": scores["metric"], "detections": scores["detections"]}
    if scores["mAP"] is None:
        details["mAP_note"] = "no class has a non-difficult object in these images"
    return EvalResult(metrics=metrics, primary="mAP", details=details)


def _whole_images(name: str, trained_data: dict) -> list[Region]:
    """Every labelled image of a folder as one region (nothing held out, nothing cut)."""
    regions, held_out = split_regions(resolve_dota_folder(name), classes=trained_data.get("classes", "dota-v1.0"),
                                      val_fraction=0.0, min_inside=trained_data.get("min_inside", 0.7))
    return regions + held_out
