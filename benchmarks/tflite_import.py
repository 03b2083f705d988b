"""How closely ``mltk import FILE.tflite --arch mobilenet_v2`` reproduces the TFLite model it read.

    python benchmarks/tflite_import.py            # the shared quantized MobileNetV2, every sample image

The TFLite file is imported into a fresh registry (its own MLTK_HOME under a
temporary folder) exactly as ``mltk import`` does, and the artifact is loaded
back with ``load_classifier``: that is the model a user gets (it pads like TF's
``SAME``: ``mobilenet_v2``'s ``tf_padding`` option, kept on its card). It and the
same weights rebuilt with torchvision's symmetric padding (the ablation) are run
on every ImageNet-like sample image next
to the TFLite interpreter (``ai-edge-litert``; a benchmark-only dependency) on
the same uint8 pixels. Reported per image set and overall: top-1 agreement with
the interpreter, accuracy against the labels the file names carry, the mean
absolute difference of the softmax outputs, and how often the interpreter's
uint8 softmax has a tie at the top (where "its" top-1 is the first index).

Images: ``imagenet_samples/images`` (one per class, 275 classes, stored at a
128 px shorter side, so upscaled here) and foolbox's 20 ImageNet-val JPEGs
(512 px). Each is resized to a 224 px shorter side (bilinear) and centre-cropped.
Labels: foolbox's ``imagenet_<i>_<label>.jpg`` carry the 0-999 ImageNet index
(+1 for the file's background class); ``<wnid>_<name>.jpg`` are matched to
``imagenet_labels.txt`` through TinyImageNet's wnid->words list, else by the
name, and left out of accuracy when the name is ambiguous.

Writes benchmarks/results/tflite_import.json and tflite_import.md.
"""

from __future__ import annotations

import argparse
import copy
import datetime as dt
import json
import os
import platform
import re
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
JSON_PATH, MD_PATH = RESULTS / "tflite_import.json", RESULTS / "tflite_import.md"
SHARED = Path(os.environ.get("MLTK_SHARED_DATA", "/work/shared/data"))
MODEL = SHARED / "pretrained_weights/mobilenet_tflite_imagenet_coral/mobilenet_v2_1.0_224_quant.tflite"
IMAGENET_SAMPLES = SHARED / "imagenet_samples"
FOOLBOX = SHARED / "foolbox_test_samples"
SIZE = 224
GOAL = 0.95  # top-1 agreement with the interpreter asked of the import


def load_image(path: Path, size: int = SIZE) -> np.ndarray:
    """uint8 [size, size, 3]: the shorter side resized to ``size`` (bilinear), then the centre crop."""
    image = Image.open(path).convert("RGB")
    width, height = image.size
    scale = size / min(width, height)
    image = image.resize((max(size, round(width * scale)), max(size, round(height * scale))), Image.BILINEAR)
    width, height = image.size
    left, top = (width - size) // 2, (height - size) // 2
    return np.asarray(image.crop((left, top, left + size, top + size)), dtype=np.uint8)


def _key(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", " ", text.lower()).strip()


def sample_labels(labels: list[str]) -> dict[str, list[tuple[Path, int | None]]]:
    """{image set: [(image, class index in the file's 1001 or None when unknown)]}."""
    words = {}
    words_file = IMAGENET_SAMPLES / "tinyimagenet_200_wnids_words.txt"
    if words_file.is_file():
        words = dict(line.split("\t", 1) for line in words_file.read_text().splitlines() if "\t" in line)
    exact = {line: index for index, line in enumerate(labels)}
    by_first, by_any = {}, {}
    for index, line in enumerate(labels):
        names = [_key(name) for name in line.split(",")]
        by_first.setdefault(names[0], []).append(index)
        for name in set(names):
            by_any.setdefault(name, []).append(index)
    samples = []
    for path in sorted((IMAGENET_SAMPLES / "images").glob("*.jpg")):
        wnid, _, name = path.stem.partition("_")
        if words.get(wnid, "").strip() in exact:
            samples.append((path, exact[words[wnid].strip()]))
            continue
        candidates = by_first.get(_key(name)) or by_any.get(_key(name)) or []
        samples.append((path, candidates[0] if len(candidates) == 1 else None))
    foolbox = [(path, int(path.stem.rsplit("_", 1)[1]) + 1)  # +1: the file's class 0 is "background"
               for path in sorted(FOOLBOX.glob("imagenet_*.jpg"))]
    return {"imagenet_samples": samples, "foolbox_imagenet": foolbox}


def interpreter_outputs(model: Path, images: np.ndarray) -> np.ndarray:
    """The interpreter's dequantised softmax [N, classes], one image at a time (the file's batch is 1)."""
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=str(model))
    interpreter.allocate_tensors()
    source, sink = interpreter.get_input_details()[0], interpreter.get_output_details()[0]
    scale, zero_point = sink["quantization"]
    outputs = []
    for image in images:
        interpreter.set_tensor(source["index"], image[None])
        interpreter.invoke()
        outputs.append(scale * (interpreter.get_tensor(sink["index"])[0].astype(np.float32) - zero_point))
    return np.stack(outputs)


def torch_outputs(model: torch.nn.Module, images: np.ndarray, batch: int = 32) -> np.ndarray:
    """softmax [N, classes] of ``model`` on uint8 [N, H, W, 3] images given as [0, 1] floats."""
    outputs = []
    with torch.no_grad():
        for start in range(0, len(images), batch):
            x = torch.from_numpy(images[start:start + batch]).permute(0, 3, 1, 2).float() / 255.0
            outputs.append(torch.softmax(model(x), dim=1).numpy())
    return np.concatenate(outputs)


def simulate_uint8_activations(model: torch.nn.Module, model_path: Path) -> list:
    """Round every activation of ``model`` (the imported classifier) to the uint8 grid the TFLite file gives that
    tensor (``scale * (q - zero_point)``, q clamped to the type's range): a diagnostic of where the import and the
    interpreter part. If the rounded model agrees with the interpreter where the float one does not, the
    remaining difference is the interpreter's integer arithmetic, not the import. Returns the hook handles."""
    from mltk.nn.classifiers import tflite_mobilenet as tfl

    graph = tfl.read_tflite(model_path)
    net = model.net
    modules = dict(net.named_modules())

    def rounding(index: int):
        tensor = graph.tensors[index]
        scale, zero = float(tensor.scale[0]), int(tensor.zero_point[0])
        low, high = (-128, 127) if tensor.type_name == "INT8" else (0, 255)
        return lambda x: (torch.clamp(torch.round(x / scale) + zero, low, high) - zero) * scale

    handles = []
    for step, op in tfl._match(graph, tfl._plan(net)):
        rounded = rounding(op.outputs[0])
        if isinstance(step, tfl._PoolStep):  # the pooled features are the classifier's input
            handles.append(net.classifier.register_forward_pre_hook(
                lambda module, args, rounded=rounded: (rounded(args[0]),)))
            continue
        if isinstance(step, tfl._ConvStep):
            parent, position = step.norm.rsplit(".", 1)
            name = f"{parent}.{int(position) + 1}" if step.relu6 else step.norm  # where TFLite's op output sits
        elif isinstance(step, tfl._AddStep):
            name = step.block
        else:
            name = step.key
        handles.append(modules[name].register_forward_hook(
            lambda module, args, output, rounded=rounded: rounded(output)))
    return handles


def figures(reference: np.ndarray, ours: np.ndarray, labels: list[int | None]) -> dict:
    top_reference, top_ours = reference.argmax(1), ours.argmax(1)
    known = [i for i, label in enumerate(labels) if label is not None]
    tied = reference.max(1, keepdims=True) == reference
    disagree = top_ours != top_reference
    return {
        "images": len(labels),
        "top1_agreement": float((top_ours == top_reference).mean()),
        "top1_in_interpreter_ties": float(tied[np.arange(len(labels)), top_ours].mean()),
        "mean_abs_softmax_diff": float(np.abs(ours - reference).mean()),
        "max_abs_softmax_diff": float(np.abs(ours - reference).max()),
        # How sure the interpreter was where we part: near-ties are where rounding decides.
        "interpreter_top1_prob_where_disagree_median": float(np.median(reference.max(1)[disagree]))
        if disagree.any() else None,
        "interpreter_top1_prob_median": float(np.median(reference.max(1))),
        "labelled": len(known),
        "accuracy": float(np.mean([top_ours[i] == labels[i] for i in known])) if known else None,
        "top5_accuracy": float(np.mean([labels[i] in np.argsort(-ours[i])[:5] for i in known])) if known else None,
    }


def run(model_path: Path) -> dict:
    from mltk.core.registry import Registry
    from mltk.nn import build_from_spec
    from mltk.nn.artifacts import load_classifier
    from mltk.nn.importing import import_weights

    labels = [line.strip() for line in (model_path.parent / "imagenet_labels.txt").read_text().splitlines()
              if line.strip()]
    sets = sample_labels(labels)
    with tempfile.TemporaryDirectory() as home:
        registry = Registry(home)
        started = time.perf_counter()
        record = import_weights(model_path, arch="mobilenet_v2", registry=registry)
        import_s = time.perf_counter() - started
        loaded = load_classifier(record.ref, registry=registry)
    artifact = loaded.model.eval()
    spec = copy.deepcopy(artifact.spec)
    spec["args"]["tf_padding"] = False
    torch_padded = build_from_spec(spec)
    torch_padded.load_state_dict(artifact.state_dict())
    torch_padded.eval()
    simulated = build_from_spec(artifact.spec)
    simulated.load_state_dict(artifact.state_dict())
    simulate_uint8_activations(simulated.eval(), model_path)
    result = {"model": str(model_path), "artifact": record.ref, "import_s": round(import_s, 2),
              "spec": loaded.card["arch"], "class_names": len(loaded.task["class_names"]), "sets": {}}
    variants = ("artifact", "torchvision_padding", "simulated_uint8")
    everything = {"reference": [], "labels": [], **{variant: [] for variant in variants}}
    for name, samples in sets.items():
        if not samples:
            continue
        images = np.stack([load_image(path) for path, _ in samples])
        set_labels = [label for _, label in samples]
        reference = interpreter_outputs(model_path, images)
        outputs = {"artifact": torch_outputs(artifact, images),
                   "torchvision_padding": torch_outputs(torch_padded, images),
                   "simulated_uint8": torch_outputs(simulated, images)}
        result["sets"][name] = {
            "interpreter": figures(reference, reference, set_labels),
            **{variant: figures(reference, output, set_labels) for variant, output in outputs.items()},
        }
        everything["reference"].append(reference)
        everything["labels"] += set_labels
        for variant, output in outputs.items():
            everything[variant].append(output)
    reference = np.concatenate(everything["reference"])
    result["sets"]["all"] = {
        "interpreter": figures(reference, reference, everything["labels"]),
        **{variant: figures(reference, np.concatenate(everything[variant]), everything["labels"])
           for variant in variants},
    }
    result["layers"] = layer_check(model_path, artifact, np.stack([load_image(path) for path, _ in
                                                                   sets["foolbox_imagenet"][:LAYER_CHECK_IMAGES]]))
    return result


LAYER_CHECK_IMAGES = 4


def layer_check(model_path: Path, model: torch.nn.Module, images: np.ndarray) -> dict:
    """Each convolution of the import on its own: fed the interpreter's own (dequantised) input tensor, the
    artifact's conv + BatchNorm (+ ReLU6), rounded to the op's output grid, against the interpreter's output,
    in units of that grid's step. Uses the interpreter's reference kernels with every tensor kept."""
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    from mltk.nn.classifiers import tflite_mobilenet as tfl

    interpreter = Interpreter(model_path=str(model_path), experimental_preserve_all_tensors=True,
                              experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES)
    interpreter.allocate_tensors()
    quantization = {t["index"]: t["quantization"] for t in interpreter.get_tensor_details()}
    graph = tfl.read_tflite(model_path)
    modules = dict(model.net.named_modules())
    convs = [(step, op) for step, op in tfl._match(graph, tfl._plan(model.net)) if isinstance(step, tfl._ConvStep)]
    worst = {step.conv: 0.0 for step, _ in convs}
    mean = {step.conv: [] for step, _ in convs}

    def tensor(index: int) -> np.ndarray:
        scale, zero = quantization[index]
        return scale * (interpreter.get_tensor(index).astype(np.float32) - zero)

    for image in images:
        interpreter.set_tensor(interpreter.get_input_details()[0]["index"], image[None])
        interpreter.invoke()
        for step, op in convs:
            scale, zero = quantization[op.outputs[0]]
            with torch.no_grad():
                out = modules[step.norm](modules[step.conv](torch.from_numpy(tensor(op.inputs[0])).permute(0, 3, 1, 2)))
                out = out.clamp(0, 6) if step.relu6 else out
                rounded = (torch.clamp(torch.round(out / scale) + zero, 0, 255) - zero) * scale
            steps = np.abs(rounded.permute(0, 2, 3, 1).numpy() - tensor(op.outputs[0])) / scale
            worst[step.conv] = max(worst[step.conv], float(steps.max()))
            mean[step.conv].append(float(steps.mean()))
    return {"images": len(images), "convs": len(convs),
            "max_steps": max(worst.values()), "convs_within_one_step": sum(v <= 1.01 for v in worst.values()),
            "mean_steps": {name: round(float(np.mean(values)), 4) for name, values in mean.items()}}


def write_markdown(result: dict) -> None:
    lines = [
        "# TFLite import: MobileNetV2 (uint8) against the TFLite interpreter",
        "",
        f"Written by `benchmarks/tflite_import.py` from `tflite_import.json` ({result['date']}, "
        f"{result['machine']}, torch {result['torch']}, ai-edge-litert {result['ai_edge_litert']}).",
        "",
        f"Command: `python benchmarks/tflite_import.py` — imports `{Path(result['model']).name}` "
        f"(google-coral test data, 1001 classes with background at 0) with `import_weights(..., "
        f"arch=\"mobilenet_v2\")` into a fresh registry in {result['import_s']} s, loads the artifact back "
        "and runs it on the same 224 px uint8 crops as the interpreter.",
        "",
        "* **artifact**: the model as stored and loaded back (stride-2 convs pad bottom/right as TF's SAME "
        "does: `mobilenet_v2`'s `tf_padding` option, kept on the card).",
        "* **torchvision_padding**: the same weights with torchvision's symmetric padding (the ablation).",
        "* **simulated_uint8**: a diagnostic, not what users get: the artifact with every activation rounded to "
        "the uint8 grid the file gives that tensor.",
        "* **interpreter**: the TFLite file itself (its agreement is 1 by definition).",
        "",
        "Top-1 agreement is with the interpreter's first top index; \"in ties\" counts our top-1 as agreeing "
        "when the interpreter's uint8 softmax has it among equal maxima. Accuracy is against the file-name "
        "labels (imagenet_samples are 128 px images upscaled, one per class, so accuracy there is low for "
        "every model alike).",
        "",
        "| images | model | n | top-1 agreement | in ties | mean abs softmax diff | labelled | top-1 acc | top-5 acc |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for set_name, variants in result["sets"].items():
        for variant in ("artifact", "torchvision_padding", "simulated_uint8", "interpreter"):
            f = variants[variant]
            lines.append(
                f"| {set_name} | {variant} | {f['images']} | {f['top1_agreement']:.3f} | "
                f"{f['top1_in_interpreter_ties']:.3f} | {f['mean_abs_softmax_diff']:.5f} | {f['labelled']} | "
                f"{f['accuracy']:.3f} | {f['top5_accuracy']:.3f} |")
    everything = result["sets"]["all"]
    layers = result["layers"]
    lines += [
        "",
        f"Overall: the stored artifact agrees with the interpreter on "
        f"{everything['artifact']['top1_agreement']:.1%} of {everything['artifact']['images']} images; with "
        f"torchvision's padding the same weights agree on {everything['torchvision_padding']['top1_agreement']:.1%}. "
        "The rest of the difference is the interpreter's integer arithmetic (every activation requantised to "
        "uint8) against our float32 with the dequantised weights: where the artifact disagrees, the "
        "interpreter's own top-1 "
        f"probability has a median of {everything['artifact']['interpreter_top1_prob_where_disagree_median']:.2f} "
        f"(over all images {everything['interpreter']['interpreter_top1_prob_median']:.2f}): "
        "images the interpreter itself is unsure of. Rounding every activation to the file's uint8 grid "
        f"(simulated_uint8) gives {everything['simulated_uint8']['top1_agreement']:.1%}: the rest is how the "
        "interpreter's fixed-point arithmetic rounds, one step here and there, compounding over 52 layers.",
        "",
        f"**Layer by layer** ({layers['images']} foolbox images, the interpreter's reference kernels with every "
        f"tensor kept): each of the {layers['convs']} convolutions of the artifact, fed the interpreter's own "
        "input tensor and rounded to the op's output grid, lands within "
        f"{layers['max_steps']:.0f} uint8 step of the interpreter's output everywhere "
        f"({layers['convs_within_one_step']} of {layers['convs']} convs within one step; mean "
        f"{min(layers['mean_steps'].values()):.3f}-{max(layers['mean_steps'].values()):.3f} steps per conv). "
        "The weights, biases, padding and activations of the import are the file's; what is left is rounding.",
        "",
        f"Goal: top-1 agreement >= {GOAL:.0%}. "
        + "; ".join(f"{variant}: {everything[variant]['top1_agreement']:.1%} "
                    f"({'met' if everything[variant]['top1_agreement'] >= GOAL else 'not met'})"
                    for variant in ("artifact", "torchvision_padding", "simulated_uint8")) + ".",
        "",
    ]
    MD_PATH.write_text("\n".join(lines))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, default=MODEL, help="a uint8 MobileNetV2 .tflite file")
    args = parser.parse_args()
    torch.set_num_threads(min(4, os.cpu_count() or 1))
    result = run(args.model)
    from importlib.metadata import version

    result.update(date=dt.date.today().isoformat(), torch=torch.__version__,
                  ai_edge_litert=version("ai-edge-litert"), tflite=version("tflite"),
                  machine=f"{platform.machine()}, {os.cpu_count()} CPUs")
    RESULTS.mkdir(exist_ok=True)
    JSON_PATH.write_text(json.dumps(result, indent=2) + "\n")
    write_markdown(result)
    print(json.dumps(result["sets"]["all"], indent=2))


if __name__ == "__main__":
    main()
