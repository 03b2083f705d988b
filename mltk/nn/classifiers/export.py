"""Exporting a classifier artifact to a deployment format.

The network exported is the one every mltk command loads (for a quantized
artifact: the deployed graph, binary codes unpacked to +1/-1 float weights
and sign activations; the "dequantized graph"). It takes float images
[B, C, H, W] in [0, 1] (normalisation is inside) and returns logits
[B, num_classes]; loading it needs PyTorch only, not mltk.

* ``torchscript``: traced with ``torch.jit.trace``, ``model.torchscript.pt``
  for ``torch.jit.load`` (PyTorch marks TorchScript as deprecated);
* ``pt2``: ``torch.export`` with a dynamic batch size, ``model.pt2`` for
  ``torch.export.load(path).module()``.

ONNX is not offered: PyTorch's exporters need the ``onnx`` (and for the
newer one ``onnxscript``) package, which mltk does not depend on.
"""

from __future__ import annotations

import io
import warnings
from pathlib import Path

import torch

from mltk.core.errors import UsageError
from mltk.core.tensor_files import write_file
from mltk.nn.artifacts import LoadedClassifier

EXPORT_FORMATS = ("torchscript", "pt2")
FILE_NAMES = {"torchscript": "model.torchscript.pt", "pt2": "model.pt2"}


def export_classifier(loaded: LoadedClassifier, out_dir: Path, *, fmt: str, overwrite: bool = False) -> Path:
    """Write ``loaded`` in ``fmt`` into ``out_dir``; the path of the file written."""
    if fmt == "onnx":
        raise UsageError("--format onnx is not available: PyTorch's ONNX exporters need the onnx package, "
                         "which mltk does not depend on",
                         hint="export --format torchscript, or install onnx and call torch.onnx.export yourself")
    if fmt not in EXPORT_FORMATS:
        raise UsageError(f"--format {fmt!r}: unknown export format",
                         hint=f"formats: copy (the artifact's files), {', '.join(EXPORT_FORMATS)}")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    target = out_dir / FILE_NAMES[fmt]
    if target.exists() and not overwrite:
        raise UsageError(f"{target} already exists", hint="pass --overwrite or choose another folder")
    args = loaded.arch_args
    example = torch.rand(2, args["in_channels"], args["image_size"], args["image_size"],
                         generator=torch.Generator().manual_seed(0))
    model = loaded.model.cpu().eval()
    buffer = io.BytesIO()
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # torch.jit's deprecation notice
        if fmt == "torchscript":
            program = torch.jit.trace(model, example, check_trace=False)
            torch.jit.save(program, buffer)
            outputs = program(example)
        else:
            program = torch.export.export(model, (example,), dynamic_shapes={"x": {0: torch.export.Dim("batch")}})
            torch.export.save(program, buffer)
            outputs = program.module()(example)
        if not torch.allclose(outputs, model(example), atol=1e-5):
            raise RuntimeError(f"the exported {fmt} graph does not reproduce the model's outputs")
    staging = target.with_name(f".{target.name}.tmp")
    write_file(staging, buffer.getvalue())
    staging.replace(target)
    return target
