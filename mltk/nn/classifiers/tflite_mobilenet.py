"""A TFLite MobileNetV2 (quantized or float) as mltk's ``mobilenet_v2``: read, dequantise, map.

TFLite's MobileNetV2 files (TF-slim's ``mobilenet_v2_<width>_<size>.tflite``,
their ``_quant`` uint8 versions, per-channel int8 conversions) hold the same
network as torchvision's ``mobilenet_v2`` with BatchNorm folded into the
convolutions. The reader walks the graph's operators in order against the
convolutions, residual additions, pooling and classifier that torchvision's
network runs, and refuses the file at the first operator that does not fit,
naming it. Weights are dequantised (``scale * (q - zero_point)``, per tensor
or per output channel) to float32; each folded BatchNorm becomes the identity
plus the conv's bias (weight 1, running mean 0, running variance ``1 - eps``,
so ``BN(x) = x + bias`` exactly).

TF's ``SAME`` padding of a stride-2 convolution on an even-sized map pads
one row and column at the bottom/right only, where torchvision pads every
side alike: the model is built with ``mobilenet_v2``'s ``tf_padding=True``
(see ``tf_padding.py``), an option its card keeps, so the stored artifact
pads like TF too. What the mapped network does not reproduce:

* A quantized file computes in integers, requantising every activation; the
  mapped network computes in float32 with the dequantised weights.

The classifier keeps every class of the file: TF-slim's ImageNet files have
1001, index 0 being "background". The input quantisation (uint8
``scale * (q - zero_point)``) becomes the model's ``mean``/``std``, so the
model takes images in [0, 1] like every mltk classifier.

The flatbuffer is read with the ``tflite`` package (``pip install
"mltk[tflite]"``), imported only when a file is read.
"""

from __future__ import annotations

import dataclasses
import importlib
import struct
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from mltk.core.errors import ArtifactError, UsageError
from mltk.nn.artifacts import load_weights_exactly
from mltk.nn.classifiers.architectures import build_model
from mltk.nn.classifiers.classifier import ImageClassifier

ARCH = "mobilenet_v2"
# The widths TF-slim published MobileNetV2 files for; tried in this order when
# the caller names none. 1.0 first: the most common file, and the one whose
# error is reported when no width fits.
PUBLISHED_WIDTHS = (1.0, 0.35, 0.5, 0.75, 1.3, 1.4)
# Label files looked for beside ``model.tflite``, first match wins.
LABEL_FILES = ("{stem}_labels.txt", "{stem}.txt", "labels.txt", "imagenet_labels.txt")
INSTALL_HINT = 'pip install "mltk[tflite]" (or pip install tflite)'
REFUSED_HINT = ("mltk reads TFLite files of MobileNetV2 only (torchvision's mobilenet_v2 layout); a width other "
                "than " + "/".join(str(w) for w in sorted(PUBLISHED_WIDTHS)) + " needs the option width_mult=W")
# Operators after the logits that leave the top-1 class where it is.
TRAILING_OPS = ("RESHAPE", "SQUEEZE", "SOFTMAX", "DEQUANTIZE")
# Before the first conv: a file with float input and integer insides quantises it first.
LEADING_OPS = ("QUANTIZE",)

# TFLite's tensor types as little-endian numpy dtypes (TFLite files are little-endian).
_NUMPY_TYPES = {"FLOAT32": "<f4", "FLOAT16": "<f2", "INT32": "<i4", "UINT8": "u1", "INT8": "i1",
                "INT16": "<i2", "INT64": "<i8"}


@dataclasses.dataclass(frozen=True)
class TFLiteTensor:
    """One tensor of the graph: shape, type and quantisation, and its constant data if it has any."""

    index: int
    name: str
    shape: tuple[int, ...]
    type_name: str  # "UINT8", "INT8", "FLOAT32", ...
    scale: np.ndarray | None  # float32 [1] per tensor or [C] per channel; None when not quantized
    zero_point: np.ndarray | None  # int64, same length as scale
    quantized_dimension: int
    data: bytes | None  # the raw little-endian constant, None for activations

    @property
    def quantized(self) -> bool:
        return self.scale is not None and self.scale.size > 0

    def value(self) -> np.ndarray:
        """The constant as float32 in its TFLite layout (dequantised when quantized)."""
        if self.data is None:
            raise ArtifactError(f"tensor {self.index} ({self.name}) holds no constant data")
        dtype = _NUMPY_TYPES.get(self.type_name)
        if dtype is None:
            raise ArtifactError(f"tensor {self.index} ({self.name}): type {self.type_name} is not supported",
                                hint="mltk reads float32, float16, uint8, int8 and int32 constants")
        expected = int(np.prod(self.shape, dtype=np.int64)) * np.dtype(dtype).itemsize
        if len(self.data) != expected:
            raise ArtifactError(f"tensor {self.index} ({self.name}): {len(self.data)} bytes of data for a "
                                f"{self.type_name} tensor shaped {list(self.shape)} ({expected} bytes)",
                                hint="the file is damaged; download or convert it again")
        raw = np.frombuffer(self.data, dtype=dtype).reshape(self.shape)
        if not self.quantized or self.type_name in ("FLOAT32", "FLOAT16"):
            return raw.astype(np.float32)
        return dequantize(raw, self.scale, self.zero_point, axis=self.quantized_dimension)


@dataclasses.dataclass(frozen=True)
class TFLiteOperator:
    """One operator: its position, builtin name, tensor indices and the options mltk checks."""

    index: int
    name: str  # "CONV_2D", "DEPTHWISE_CONV_2D", ... or the custom code of a custom op
    inputs: tuple[int, ...]  # -1 for an optional input left out (a conv without bias)
    outputs: tuple[int, ...]
    options: dict[str, Any]  # stride, padding, activation, ... as names and ints

    def describe(self) -> str:
        return f"op {self.index} ({self.name})"


@dataclasses.dataclass(frozen=True)
class TFLiteGraph:
    """The main subgraph of a TFLite file."""

    path: Path
    tensors: list[TFLiteTensor]
    operators: list[TFLiteOperator]
    inputs: tuple[int, ...]
    outputs: tuple[int, ...]


@dataclasses.dataclass(frozen=True)
class TFLiteClassifier:
    """A TFLite MobileNetV2 mapped onto mltk's ``mobilenet_v2``."""

    model: ImageClassifier  # images [B, 3, S, S] in [0, 1] -> logits [B, num_classes]; pads like TF's SAME
    class_names: list[str] | None  # from a label file beside the TFLite file, if one fits
    width_mult: float
    input_type: str  # "UINT8", "INT8" or "FLOAT32"


# ---------------------------------------------------------------- arithmetic


def dequantize(values: np.ndarray, scale: Sequence[float] | np.ndarray,
               zero_point: Sequence[int] | np.ndarray, *, axis: int = 0) -> np.ndarray:
    """``scale * (values - zero_point)`` as float32; one scale per tensor, or one per index along ``axis``."""
    scale = np.asarray(scale, dtype=np.float64).reshape(-1)
    zero_point = np.asarray(zero_point, dtype=np.int64).reshape(-1)
    if zero_point.size == 0:
        zero_point = np.zeros(1, dtype=np.int64)
    channels = max(scale.size, zero_point.size)
    if channels > 1:
        if values.ndim == 0 or values.shape[axis] != channels:
            raise ArtifactError(f"per-channel quantisation with {channels} scales along axis {axis} "
                                f"of a tensor shaped {list(values.shape)}")
        broadcast = [1] * values.ndim
        broadcast[axis] = channels
        # A single scale or zero point next to per-channel ones applies to every channel.
        scale = scale.reshape(broadcast) if scale.size > 1 else scale
        zero_point = zero_point.reshape(broadcast) if zero_point.size > 1 else zero_point
    return (scale * (values.astype(np.int64) - zero_point)).astype(np.float32)


# ---------------------------------------------------------------- reading the flatbuffer


def _tflite_package():
    try:
        return importlib.import_module("tflite")
    except ImportError:
        raise UsageError("reading a .tflite file needs the optional extra mltk[tflite]",
                         hint=INSTALL_HINT) from None


def read_tflite(path: str | Path) -> TFLiteGraph:
    """The main subgraph of the TFLite file ``path``; ArtifactError if it is not one."""
    tflite = _tflite_package()
    path = Path(path)
    try:
        content = path.read_bytes()
    except OSError as exc:
        raise ArtifactError(f"{path}: cannot read: {exc.strerror}") from None
    # A flatbuffer starts with the root table offset, then the file identifier.
    if len(content) < 8 or content[4:8] != b"TFL3":
        raise ArtifactError(f"{path}: not a TFLite flatbuffer (no TFL3 identifier)",
                            hint="give a .tflite file written by the TFLite converter")
    try:
        graph = _parse(tflite, path, content)
    except (IndexError, ValueError, struct.error, UnicodeDecodeError) as exc:
        # The generated accessors trust every offset; a truncated or damaged file fails inside them.
        raise ArtifactError(f"{path}: a damaged TFLite flatbuffer ({type(exc).__name__}: {exc})",
                            hint="download or convert the file again") from None
    count = len(graph.tensors)
    referenced = [*graph.inputs, *graph.outputs] + [t for op in graph.operators for t in op.inputs + op.outputs]
    if any(not -1 <= t < count for t in referenced):
        raise ArtifactError(f"{path}: a damaged TFLite flatbuffer (a tensor index outside its {count} tensors)",
                            hint="download or convert the file again")
    return graph


def _parse(tflite, path: Path, content: bytes) -> TFLiteGraph:
    type_names = {number: name for name, number in vars(tflite.TensorType).items() if not name.startswith("_")}
    model = tflite.Model.GetRootAsModel(content, 0)
    if model.SubgraphsLength() < 1:
        raise ArtifactError(f"{path}: the TFLite model has no subgraph")
    graph = model.Subgraphs(0)
    tensors = [_tensor(graph.Tensors(i), i, model, content, type_names)
               for i in range(graph.TensorsLength())]
    op_names = []
    for i in range(model.OperatorCodesLength()):
        code = model.OperatorCodes(i)
        # Files from before 2.4 keep the op in deprecated_builtin_code (int8); newer ones in builtin_code.
        number = max(code.BuiltinCode(), code.DeprecatedBuiltinCode())
        name = tflite.BUILTIN_OPCODE2NAME.get(number, f"BUILTIN_{number}")
        if name == "CUSTOM" and code.CustomCode():
            name = code.CustomCode().decode(errors="replace")
        op_names.append(name)
    operators = []
    for i in range(graph.OperatorsLength()):
        op = graph.Operators(i)
        name = op_names[op.OpcodeIndex()]
        operators.append(TFLiteOperator(i, name, tuple(int(t) for t in _ints(op.InputsAsNumpy())),
                                        tuple(int(t) for t in _ints(op.OutputsAsNumpy())),
                                        _options(tflite, op, name)))
    return TFLiteGraph(path, tensors, operators, tuple(int(t) for t in _ints(graph.InputsAsNumpy())),
                       tuple(int(t) for t in _ints(graph.OutputsAsNumpy())))


def _ints(values) -> np.ndarray:
    # The generated accessors return the int 0 for an absent vector.
    return values if isinstance(values, np.ndarray) else np.zeros(0, dtype=np.int32)


def _tensor(tensor, index: int, model, content: bytes, type_names: dict[int, str]) -> TFLiteTensor:
    quantization = tensor.Quantization()
    scale = zero_point = None
    dimension = 0
    if quantization is not None and quantization.ScaleLength() > 0:
        scale = quantization.ScaleAsNumpy().astype(np.float32)
        zero_point = (quantization.ZeroPointAsNumpy().astype(np.int64) if quantization.ZeroPointLength()
                      else np.zeros(1, dtype=np.int64))
        dimension = quantization.QuantizedDimension()
    data = None
    buffer = model.Buffers(tensor.Buffer()) if tensor.Buffer() < model.BuffersLength() else None
    if buffer is not None:
        if buffer.Offset() > 1:  # models over 2 GB keep constants after the flatbuffer
            data = content[buffer.Offset():buffer.Offset() + buffer.Size()]
        elif buffer.DataLength() > 0:
            data = buffer.DataAsNumpy().tobytes()
    name = tensor.Name().decode(errors="replace") if tensor.Name() else f"tensor{index}"
    return TFLiteTensor(index, name, tuple(int(d) for d in _ints(tensor.ShapeAsNumpy())),
                        type_names.get(tensor.Type(), f"TYPE_{tensor.Type()}"), scale, zero_point, dimension,
                        data)


def _options(tflite, op, name: str) -> dict[str, Any]:
    """The options mltk checks, by name; {} for operators whose options it does not read."""
    table = op.BuiltinOptions()
    if table is None:
        return {}
    activations = {number: key for key, number in vars(tflite.ActivationFunctionType).items()
                   if not key.startswith("_")}
    paddings = {number: key for key, number in vars(tflite.Padding).items() if not key.startswith("_")}
    if name in ("CONV_2D", "DEPTHWISE_CONV_2D"):
        options = tflite.Conv2DOptions() if name == "CONV_2D" else tflite.DepthwiseConv2DOptions()
        options.Init(table.Bytes, table.Pos)
        found = {"stride": (options.StrideH(), options.StrideW()),
                 "dilation": (options.DilationHFactor(), options.DilationWFactor()),
                 "padding": paddings.get(options.Padding()),
                 "activation": activations.get(options.FusedActivationFunction())}
        if name == "DEPTHWISE_CONV_2D":
            found["depth_multiplier"] = options.DepthMultiplier()
        return found
    if name == "AVERAGE_POOL_2D":
        options = tflite.Pool2DOptions()
        options.Init(table.Bytes, table.Pos)
        return {"filter": (options.FilterHeight(), options.FilterWidth()),
                "stride": (options.StrideH(), options.StrideW()),
                "padding": paddings.get(options.Padding()),
                "activation": activations.get(options.FusedActivationFunction())}
    if name in ("ADD", "FULLY_CONNECTED"):
        options = tflite.AddOptions() if name == "ADD" else tflite.FullyConnectedOptions()
        options.Init(table.Bytes, table.Pos)
        return {"activation": activations.get(options.FusedActivationFunction())}
    return {}


# ---------------------------------------------------------------- what torchvision's network runs


@dataclasses.dataclass(frozen=True)
class _ConvStep:
    conv: str  # state_dict prefix of the conv ("features.2.conv.1.0")
    norm: str  # of the BatchNorm after it
    depthwise: bool
    weight_shape: tuple[int, ...]  # torch's [out, in/groups, kh, kw]
    stride: int
    relu6: bool

    @property
    def op_name(self) -> str:
        return "DEPTHWISE_CONV_2D" if self.depthwise else "CONV_2D"

    def describe(self) -> str:
        kernel = f"{self.weight_shape[2]}x{self.weight_shape[3]}"
        kind = "depthwise conv" if self.depthwise else "conv"
        return (f"{self.op_name} for {self.conv} ({kernel} {kind}, stride {self.stride}, "
                f"{self.weight_shape[0]} channels, {'RELU6' if self.relu6 else 'no activation'})")


@dataclasses.dataclass(frozen=True)
class _AddStep:
    block: str

    def describe(self) -> str:
        return f"ADD closing the residual of {self.block}"


@dataclasses.dataclass(frozen=True)
class _PoolStep:
    def describe(self) -> str:
        return "AVERAGE_POOL_2D or MEAN over the whole map"


@dataclasses.dataclass(frozen=True)
class _LinearStep:
    key: str  # "classifier.1"
    weight_shape: tuple[int, int]

    def describe(self) -> str:
        return f"CONV_2D 1x1 or FULLY_CONNECTED for {self.key} ({self.weight_shape[1]} -> {self.weight_shape[0]})"


def _plan(net: nn.Module) -> list:
    """The steps torchvision's MobileNetV2 ``net`` runs, in order."""
    steps: list = []
    for index, block in enumerate(net.features):
        steps += _conv_steps(f"features.{index}", block)
        if getattr(block, "use_res_connect", False):
            steps.append(_AddStep(f"features.{index}"))
    steps.append(_PoolStep())
    linear = net.classifier[1]
    steps.append(_LinearStep("classifier.1", tuple(linear.weight.shape)))
    return steps


def _conv_steps(prefix: str, module: nn.Module) -> list[_ConvStep]:
    children = list(module.named_children())
    steps = []
    for position, (name, child) in enumerate(children):
        if isinstance(child, nn.Conv2d):
            norm_name, norm = children[position + 1]
            if not isinstance(norm, nn.BatchNorm2d):
                raise TypeError(f"{prefix}.{name} is not followed by a BatchNorm2d")
            relu6 = position + 2 < len(children) and isinstance(children[position + 2][1], nn.ReLU6)
            steps.append(_ConvStep(f"{prefix}.{name}", f"{prefix}.{norm_name}", child.groups > 1,
                                   tuple(child.weight.shape), child.stride[0], relu6))
        elif not isinstance(child, (nn.BatchNorm2d, nn.ReLU6)):
            steps += _conv_steps(f"{prefix}.{name}", child)
    return steps


# ---------------------------------------------------------------- matching the graph to the steps


class _Refused(Exception):
    def __init__(self, op: TFLiteOperator | None, reason: str, reached: int):
        super().__init__(reason)
        self.op, self.reason, self.reached = op, reason, reached


def _torch_conv_shape(tensor: TFLiteTensor, depthwise: bool) -> tuple[int, ...]:
    if len(tensor.shape) != 4:
        return tensor.shape
    out_or_one, kh, kw, in_or_out = tensor.shape
    # TFLite: conv [out, kh, kw, in]; depthwise [1, kh, kw, out]. torch: [out, in/groups, kh, kw].
    return (in_or_out, out_or_one, kh, kw) if depthwise else (out_or_one, in_or_out, kh, kw)


def _match(graph: TFLiteGraph, steps: list) -> list[tuple[Any, TFLiteOperator]]:
    """(step, operator) for every step, checking types, options, shapes and wiring; raises _Refused."""
    ops = graph.operators
    pairs = []
    current = graph.inputs[0]  # the tensor the next operator must read
    block_input: dict[str, int] = {}
    cursor = 0
    while cursor < len(ops) and ops[cursor].name in LEADING_OPS and ops[cursor].inputs[:1] == (current,):
        current = ops[cursor].outputs[0]
        cursor += 1
    for step in steps:
        if cursor >= len(ops):
            raise _Refused(None, f"the graph ends after {len(ops)} ops; expected {step.describe()}", cursor)
        op = ops[cursor]

        def refuse(reason: str, op=op, step=step) -> _Refused:
            return _Refused(op, f"{reason}; expected {step.describe()}", op.index)

        if isinstance(step, _ConvStep):
            block_input.setdefault(".".join(step.conv.split(".")[:2]), current)  # "features.2"
            _check_conv(graph, op, step, current, refuse)
        elif isinstance(step, _AddStep):
            if op.name != "ADD":
                raise refuse("a different operator")
            if sorted(op.inputs) != sorted((current, block_input[step.block])):
                raise refuse("it adds other tensors than the block's input and output")
            if op.options.get("activation") not in (None, "NONE"):
                raise refuse(f"it applies {op.options['activation']}")
        elif isinstance(step, _PoolStep):
            _check_pool(graph, op, current, refuse)
        else:
            _check_linear(graph, op, step, current, refuse)
        pairs.append((step, op))
        current = op.outputs[0]
        cursor += 1
    for op in ops[cursor:]:
        if op.name not in TRAILING_OPS or op.inputs[0] != current:
            raise _Refused(op, f"an operator after the classifier; only {', '.join(TRAILING_OPS)} "
                               "may follow the logits", op.index)
        current = op.outputs[0]
    if graph.outputs != (current,):
        raise _Refused(None, "the graph's output is not the classifier's", len(ops))
    return pairs


def _check_conv(graph: TFLiteGraph, op: TFLiteOperator, step: _ConvStep, current: int, refuse) -> None:
    if op.name != step.op_name:
        raise refuse("a different operator")
    if len(op.inputs) < 2 or op.inputs[0] != current:
        raise refuse("it does not read the previous layer's output")
    weight = graph.tensors[op.inputs[1]]
    if weight.data is None:
        raise refuse("its weights are computed, not constants (a float16 or dynamically quantized file?)")
    shape = _torch_conv_shape(weight, step.depthwise)
    if shape != step.weight_shape:
        raise refuse(f"its weights are {list(shape)} in torch's layout, not {list(step.weight_shape)}")
    options = op.options
    if options.get("stride") != (step.stride, step.stride):
        raise refuse(f"stride {options.get('stride')}")
    if options.get("dilation", (1, 1)) != (1, 1):
        raise refuse(f"dilation {options.get('dilation')}")
    if step.depthwise and options.get("depth_multiplier", 1) not in (0, 1):
        raise refuse(f"depth multiplier {options.get('depth_multiplier')}")
    kernel = step.weight_shape[2]
    if kernel > 1 and options.get("padding") != "SAME":
        raise refuse(f"{options.get('padding')} padding")
    activation = options.get("activation")
    if activation != ("RELU6" if step.relu6 else "NONE"):
        raise refuse(f"activation {activation}")


def _check_pool(graph: TFLiteGraph, op: TFLiteOperator, current: int, refuse) -> None:
    if not op.inputs or op.inputs[0] != current:
        raise refuse("it does not read the last feature map" if op.inputs else "a different operator")
    spatial = graph.tensors[current].shape[1:3]
    if op.name == "AVERAGE_POOL_2D":
        if op.options.get("filter") != tuple(spatial) or op.options.get("activation") not in (None, "NONE"):
            raise refuse(f"a {op.options.get('filter')} pool of a {list(spatial)} map")
    elif op.name == "MEAN":
        axes = graph.tensors[op.inputs[1]]
        if axes.data is None or sorted(np.frombuffer(axes.data, dtype="<i4").tolist()) != [1, 2]:
            raise refuse("a mean over other axes than height and width")
    else:
        raise refuse("a different operator")


def _check_linear(graph: TFLiteGraph, op: TFLiteOperator, step: _LinearStep, current: int, refuse) -> None:
    if op.name not in ("CONV_2D", "FULLY_CONNECTED"):
        raise refuse("a different operator")
    if len(op.inputs) < 2 or op.inputs[0] != current:
        raise refuse("it does not read the pooled features")
    weight = graph.tensors[op.inputs[1]]
    if weight.data is None:
        raise refuse("its weights are computed, not constants")
    if int(np.prod(weight.shape)) != step.weight_shape[0] * step.weight_shape[1] \
            or weight.shape[0] != step.weight_shape[0]:
        raise refuse(f"weights shaped {list(weight.shape)}")
    if op.options.get("activation") not in (None, "NONE"):
        raise refuse(f"activation {op.options.get('activation')}")


# ---------------------------------------------------------------- weights


def _bias(graph: TFLiteGraph, op: TFLiteOperator, channels: int) -> torch.Tensor:
    if len(op.inputs) < 3 or op.inputs[2] < 0:
        return torch.zeros(channels)
    return torch.from_numpy(graph.tensors[op.inputs[2]].value().reshape(channels).copy())


def _state_dict(graph: TFLiteGraph, pairs: list, eps: dict[str, float]) -> dict[str, torch.Tensor]:
    """The weights of ``pairs`` under torchvision's keys; ``eps`` is each BatchNorm's, by its key prefix."""
    tensors: dict[str, torch.Tensor] = {}
    for step, op in pairs:
        if isinstance(step, _ConvStep):
            weight = graph.tensors[op.inputs[1]]
            if weight.quantized and weight.scale.size > 1:
                expected_axis = 3 if step.depthwise else 0  # the output channel, in TFLite's layout
                if weight.quantized_dimension != expected_axis:
                    raise ArtifactError(f"{graph.path}: {op.describe()}: per-channel scales along axis "
                                        f"{weight.quantized_dimension}, not the output channel",
                                        hint=REFUSED_HINT)
            value = weight.value()
            permuted = value.transpose(3, 0, 1, 2) if step.depthwise else value.transpose(0, 3, 1, 2)
            channels = step.weight_shape[0]
            tensors[f"{step.conv}.weight"] = torch.from_numpy(np.ascontiguousarray(permuted))
            # The BatchNorm was folded into the conv: make it the identity plus the conv's bias.
            tensors[f"{step.norm}.weight"] = torch.ones(channels)
            tensors[f"{step.norm}.bias"] = _bias(graph, op, channels)
            tensors[f"{step.norm}.running_mean"] = torch.zeros(channels)
            tensors[f"{step.norm}.running_var"] = torch.full((channels,), 1.0 - eps[step.norm])
            tensors[f"{step.norm}.num_batches_tracked"] = torch.zeros((), dtype=torch.long)
        elif isinstance(step, _LinearStep):
            classes, features = step.weight_shape
            weight = graph.tensors[op.inputs[1]].value().reshape(classes, features)
            tensors[f"{step.key}.weight"] = torch.from_numpy(np.ascontiguousarray(weight))
            tensors[f"{step.key}.bias"] = _bias(graph, op, classes)
    return tensors


# ---------------------------------------------------------------- the whole import


def input_normalization(tensor: TFLiteTensor) -> tuple[list[float], list[float]] | None:
    """(mean, std) per channel turning images in [0, 1] into the values the file's input tensor means.

    A uint8 input holds the pixel ``p = 255 x`` and means ``scale * (p - zero_point)``,
    which is ``(x - mean) / std`` with ``mean = zero_point / 255`` and
    ``std = 1 / (255 scale)``; an int8 input holds ``p - 128``. A float input
    says nothing about its normalisation: None.
    """
    if tensor.type_name not in ("UINT8", "INT8") or not tensor.quantized or tensor.scale.size != 1:
        return None
    offset = 128 if tensor.type_name == "INT8" else 0
    channels = tensor.shape[-1]
    mean = (float(tensor.zero_point[0]) + offset) / 255.0
    std = 1.0 / (255.0 * float(tensor.scale[0]))
    return [mean] * channels, [std] * channels


def find_class_names(path: Path, num_classes: int) -> list[str] | None:
    """The lines of the first label file beside ``path`` with one line per class; None if none fits."""
    for pattern in LABEL_FILES:
        candidate = path.with_name(pattern.format(stem=path.stem))
        if candidate.is_file():
            names = [line.strip() for line in candidate.read_text(errors="replace").splitlines() if line.strip()]
            if len(names) == num_classes:
                return names
    return None


def mobilenet_v2_from_tflite(path: str | Path, *, options: dict | None = None,
                             mean: list[float] | None = None, std: list[float] | None = None) -> TFLiteClassifier:
    """mltk's ``mobilenet_v2`` holding the weights of the TFLite MobileNetV2 at ``path``, padding like TF.

    ``options`` are ``mobilenet_v2``'s (``width_mult`` is found from the file
    when left out); ``mean``/``std`` replace the normalisation read from the
    input quantisation. Raises ArtifactError naming the first operator that
    does not fit MobileNetV2, and UsageError when the ``tflite`` package is missing.
    """
    graph = read_tflite(path)
    path = Path(path)
    if len(graph.inputs) != 1 or len(graph.outputs) != 1:
        raise ArtifactError(f"{path}: {len(graph.inputs)} inputs and {len(graph.outputs)} outputs; "
                            "an image classifier has one of each", hint=REFUSED_HINT)
    image = graph.tensors[graph.inputs[0]]
    if len(image.shape) != 4 or image.shape[1] != image.shape[2]:
        raise ArtifactError(f"{path}: input shaped {list(image.shape)}; expected [1, S, S, C] square images",
                            hint=REFUSED_HINT)
    _, size, _, channels = image.shape
    num_classes = graph.tensors[graph.outputs[0]].shape[-1]
    normalization = input_normalization(image)
    if mean is None and normalization:
        mean = normalization[0]
    if std is None and normalization:
        std = normalization[1]
    options = dict(options or {})
    widths = [options.pop("width_mult")] if "width_mult" in options else list(PUBLISHED_WIDTHS)
    refusals = []
    for width in widths:
        model = build_model(ARCH, num_classes=num_classes, in_channels=channels, image_size=size,
                            mean=mean, std=std, width_mult=float(width), **{"tf_padding": True, **options})
        try:
            pairs = _match(graph, _plan(model.net))
        except _Refused as refusal:
            refusals.append(refusal)
            continue
        eps = {name: module.eps for name, module in model.net.named_modules()
               if isinstance(module, nn.BatchNorm2d)}
        tensors = _state_dict(graph, pairs, eps)
        # Every key must be filled: a torchvision change the plan missed would leave random weights.
        load_weights_exactly(model, {f"net.{key}": value for key, value in tensors.items()}, str(path),
                             fits=f"{ARCH} at width {width}")
        model.eval()
        return TFLiteClassifier(model, find_class_names(path, num_classes), float(width), image.type_name)
    # The width that matched the most operators says best where the file departs from MobileNetV2.
    refusal = max(refusals, key=lambda r: r.reached)
    where = refusal.op.describe() if refusal.op else "the graph"
    raise ArtifactError(f"{path}: {where} does not fit MobileNetV2: {refusal.reason}", hint=REFUSED_HINT)
