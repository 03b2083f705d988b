"""TFLite MobileNetV2 files into mltk's ``mobilenet_v2`` (``mltk.nn.classifiers.tflite_mobilenet``).

The small graphs are written here with the flatbuffer builders of the
``tflite`` package: a random torchvision MobileNetV2 with its BatchNorms
folded, exported layer by layer, must come back as the same function; a graph
that departs from MobileNetV2 must be refused at the operator where it departs.
The shared, real uint8 ImageNet file is compared with the TFLite interpreter
(``ai-edge-litert``) when both are present.
"""

from __future__ import annotations

import copy
import dataclasses
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from mltk.core.errors import ArtifactError, UsageError
from mltk.core.registry import Registry
from mltk.nn import build_model
from mltk.nn.artifacts import load_classifier
from mltk.nn.classifiers.tf_padding import tf_same_padding, use_tf_same_padding
from mltk.nn.classifiers.tflite_mobilenet import (
    TFLiteTensor,
    dequantize,
    input_normalization,
    mobilenet_v2_from_tflite,
)
from mltk.nn.importing import import_weights

tflite = pytest.importorskip("tflite", reason="the optional extra mltk[tflite] is not installed")
flatbuffers = pytest.importorskip("flatbuffers")

SHARED_DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data"
CORAL = SHARED_DATA / "pretrained_weights" / "mobilenet_tflite_imagenet_coral"
SHARED_MODEL = CORAL / "mobilenet_v2_1.0_224_quant.tflite"
FOOLBOX = SHARED_DATA / "foolbox_test_samples"

# A published TF-slim width (found from the file without being told) at a size
# where every stride-2 layer sees an even map and the last map is 2x2.
WIDTH, SIZE, CLASSES = 0.35, 64, 5


# ---------------------------------------------------------------- writing TFLite flatbuffers


class GraphWriter:
    """A one-subgraph TFLite model assembled tensor by tensor and op by op, then written as a flatbuffer."""

    def __init__(self):
        self.buffers: list[bytes] = [b""]  # buffer 0 is the empty sentinel every TFLite file starts with
        self.tensors: list[dict] = []
        self.ops: list[dict] = []
        self.codes: list[str] = []

    def tensor(self, shape, *, dtype="FLOAT32", data: np.ndarray | None = None, scale=None, zero_point=None,
               axis=0, name="") -> int:
        buffer = 0
        if data is not None:
            self.buffers.append(np.ascontiguousarray(data).tobytes())
            buffer = len(self.buffers) - 1
        self.tensors.append({"shape": list(shape), "type": getattr(tflite.TensorType, dtype), "buffer": buffer,
                             "name": name or f"t{len(self.tensors)}", "scale": scale, "zero_point": zero_point,
                             "axis": axis})
        return len(self.tensors) - 1

    def op(self, name: str, inputs, outputs, **options) -> None:
        if name not in self.codes:
            self.codes.append(name)
        self.ops.append({"name": name, "inputs": list(inputs), "outputs": list(outputs), "options": options})

    def write(self, path: Path, inputs, outputs) -> Path:
        b = flatbuffers.Builder(1024)
        buffers = [self._buffer(b, data) for data in self.buffers]
        tensors = [self._tensor(b, t) for t in self.tensors]
        ops = [self._operator(b, op) for op in self.ops]
        codes = []
        for name in self.codes:
            number = getattr(tflite.BuiltinOperator, name)
            tflite.OperatorCodeStart(b)
            tflite.OperatorCodeAddDeprecatedBuiltinCode(b, min(number, 127))
            tflite.OperatorCodeAddBuiltinCode(b, number)
            tflite.OperatorCodeAddVersion(b, 1)
            codes.append(tflite.OperatorCodeEnd(b))
        tensor_vector, op_vector = _offsets(b, tensors), _offsets(b, ops)
        input_vector = b.CreateNumpyVector(np.array(inputs, dtype=np.int32))
        output_vector = b.CreateNumpyVector(np.array(outputs, dtype=np.int32))
        tflite.SubGraphStart(b)
        tflite.SubGraphAddTensors(b, tensor_vector)
        tflite.SubGraphAddInputs(b, input_vector)
        tflite.SubGraphAddOutputs(b, output_vector)
        tflite.SubGraphAddOperators(b, op_vector)
        subgraph = tflite.SubGraphEnd(b)
        code_vector, subgraph_vector, buffer_vector = _offsets(b, codes), _offsets(b, [subgraph]), _offsets(b, buffers)
        tflite.ModelStart(b)
        tflite.ModelAddVersion(b, 3)
        tflite.ModelAddOperatorCodes(b, code_vector)
        tflite.ModelAddSubgraphs(b, subgraph_vector)
        tflite.ModelAddBuffers(b, buffer_vector)
        b.Finish(tflite.ModelEnd(b), file_identifier=b"TFL3")
        path.write_bytes(bytes(b.Output()))
        return path

    @staticmethod
    def _buffer(b, data: bytes) -> int:
        vector = None
        if data:
            # Constants 16-byte aligned, as the converter writes them, so the interpreter may read them in place.
            b.StartVector(1, len(data), 16)
            b.head -= len(data)
            b.Bytes[b.head:b.head + len(data)] = data
            vector = b.EndVector()
        tflite.BufferStart(b)
        if vector is not None:
            tflite.BufferAddData(b, vector)
        return tflite.BufferEnd(b)

    @staticmethod
    def _tensor(b, t: dict) -> int:
        name = b.CreateString(t["name"])
        shape = b.CreateNumpyVector(np.array(t["shape"], dtype=np.int32))
        quantization = None
        if t["scale"] is not None:
            scale = b.CreateNumpyVector(np.asarray(t["scale"], dtype=np.float32).reshape(-1))
            zero_point = b.CreateNumpyVector(np.asarray(t["zero_point"], dtype=np.int64).reshape(-1))
            tflite.QuantizationParametersStart(b)
            tflite.QuantizationParametersAddScale(b, scale)
            tflite.QuantizationParametersAddZeroPoint(b, zero_point)
            tflite.QuantizationParametersAddQuantizedDimension(b, t["axis"])
            quantization = tflite.QuantizationParametersEnd(b)
        tflite.TensorStart(b)
        tflite.TensorAddShape(b, shape)
        tflite.TensorAddType(b, t["type"])
        tflite.TensorAddBuffer(b, t["buffer"])
        tflite.TensorAddName(b, name)
        if quantization is not None:
            tflite.TensorAddQuantization(b, quantization)
        return tflite.TensorEnd(b)

    def _operator(self, b, op: dict) -> int:
        options_type, options = _options(b, op["name"], op["options"])
        inputs = b.CreateNumpyVector(np.array(op["inputs"], dtype=np.int32))
        outputs = b.CreateNumpyVector(np.array(op["outputs"], dtype=np.int32))
        tflite.OperatorStart(b)
        tflite.OperatorAddOpcodeIndex(b, self.codes.index(op["name"]))
        tflite.OperatorAddInputs(b, inputs)
        tflite.OperatorAddOutputs(b, outputs)
        if options is not None:
            tflite.OperatorAddBuiltinOptionsType(b, options_type)
            tflite.OperatorAddBuiltinOptions(b, options)
        return tflite.OperatorEnd(b)


def _offsets(b, offsets: list[int]) -> int:
    b.StartVector(4, len(offsets), 4)
    for offset in reversed(offsets):
        b.PrependUOffsetTRelative(offset)
    return b.EndVector()


def _options(b, name: str, options: dict) -> tuple[int, int | None]:
    kinds = tflite.BuiltinOptions
    activation = getattr(tflite.ActivationFunctionType, options.get("activation", "NONE"))
    padding = getattr(tflite.Padding, options.get("padding", "SAME"))
    stride = options.get("stride", 1)
    if name == "CONV_2D":
        tflite.Conv2DOptionsStart(b)
        tflite.Conv2DOptionsAddPadding(b, padding)
        tflite.Conv2DOptionsAddStrideW(b, stride)
        tflite.Conv2DOptionsAddStrideH(b, stride)
        tflite.Conv2DOptionsAddFusedActivationFunction(b, activation)
        tflite.Conv2DOptionsAddDilationWFactor(b, 1)
        tflite.Conv2DOptionsAddDilationHFactor(b, 1)
        return kinds.Conv2DOptions, tflite.Conv2DOptionsEnd(b)
    if name == "DEPTHWISE_CONV_2D":
        tflite.DepthwiseConv2DOptionsStart(b)
        tflite.DepthwiseConv2DOptionsAddPadding(b, padding)
        tflite.DepthwiseConv2DOptionsAddStrideW(b, stride)
        tflite.DepthwiseConv2DOptionsAddStrideH(b, stride)
        tflite.DepthwiseConv2DOptionsAddDepthMultiplier(b, 1)
        tflite.DepthwiseConv2DOptionsAddFusedActivationFunction(b, activation)
        tflite.DepthwiseConv2DOptionsAddDilationWFactor(b, 1)
        tflite.DepthwiseConv2DOptionsAddDilationHFactor(b, 1)
        return kinds.DepthwiseConv2DOptions, tflite.DepthwiseConv2DOptionsEnd(b)
    if name in ("AVERAGE_POOL_2D", "MAX_POOL_2D"):
        tflite.Pool2DOptionsStart(b)
        tflite.Pool2DOptionsAddPadding(b, padding)
        tflite.Pool2DOptionsAddStrideW(b, stride)
        tflite.Pool2DOptionsAddStrideH(b, stride)
        tflite.Pool2DOptionsAddFilterWidth(b, options["filter"])
        tflite.Pool2DOptionsAddFilterHeight(b, options["filter"])
        tflite.Pool2DOptionsAddFusedActivationFunction(b, activation)
        return kinds.Pool2DOptions, tflite.Pool2DOptionsEnd(b)
    if name == "ADD":
        tflite.AddOptionsStart(b)
        tflite.AddOptionsAddFusedActivationFunction(b, activation)
        return kinds.AddOptions, tflite.AddOptionsEnd(b)
    if name == "SOFTMAX":
        tflite.SoftmaxOptionsStart(b)
        tflite.SoftmaxOptionsAddBeta(b, 1.0)
        return kinds.SoftmaxOptions, tflite.SoftmaxOptionsEnd(b)
    return 0, None  # RESHAPE takes its shape as a second input


# ---------------------------------------------------------------- a torchvision MobileNetV2 as a TFLite graph


def _conv_layers(module: nn.Module):
    """(conv, its BatchNorm, whether a ReLU6 follows) in execution order."""
    children = list(module.children())
    for position, child in enumerate(children):
        if isinstance(child, nn.Conv2d):
            relu6 = position + 2 < len(children) and isinstance(children[position + 2], nn.ReLU6)
            yield child, children[position + 1], relu6
        elif not isinstance(child, (nn.BatchNorm2d, nn.ReLU6)):
            yield from _conv_layers(child)


def random_mobilenet(seed: int = 0):
    """An eval-mode mltk mobilenet_v2 whose BatchNorms are not the identity (so folding them is tested).

    The running statistics are measured on random images, so that activations
    keep their scale through the depth and the output depends on the input.
    """
    torch.manual_seed(seed)
    model = build_model("mobilenet_v2", num_classes=CLASSES, in_channels=3, image_size=SIZE, width_mult=WIDTH)
    norms = [module for module in model.modules() if isinstance(module, nn.BatchNorm2d)]
    for norm in norms:
        norm.momentum = None  # a plain average over the calibration batches
    with torch.no_grad():
        model.train()(torch.rand(16, 3, SIZE, SIZE))
    for norm in norms:
        norm.weight.data.uniform_(0.5, 1.5)
        norm.bias.data.normal_(0, 0.1)
    # torchvision starts the head at std 0.01: logits that small would hide any difference in the features.
    model.net.classifier[1].weight.data.normal_(0, 0.05)
    model.net.classifier[1].bias.data.normal_(0, 0.5)
    return model.eval()


def _quantize_per_channel(weight: np.ndarray, axis: int) -> tuple[np.ndarray, np.ndarray]:
    """Symmetric int8 per channel along ``axis``: (int8 values, scales)."""
    other = tuple(i for i in range(weight.ndim) if i != axis)
    scale = np.maximum(np.abs(weight).max(axis=other), 1e-8) / 127.0
    shape = [1] * weight.ndim
    shape[axis] = -1
    return np.clip(np.round(weight / scale.reshape(shape)), -127, 127).astype(np.int8), scale.astype(np.float32)


def write_mobilenet(model, path: Path, *, int8_weights: bool = False, break_op: int | None = None) -> Path:
    """``model`` (mltk mobilenet_v2) as a float TFLite graph of folded convs; int8 per-channel weights on request.

    ``break_op``: that op gets a RELU activation it should not have, to be refused.
    """
    g = GraphWriter()
    current = first = g.tensor([1, SIZE, SIZE, 3], name="input")
    size = SIZE
    for block in model.net.features:
        block_input = current
        for conv, bn, relu6 in _conv_layers(block):
            current, size = _write_conv(g, current, size, conv, bn, relu6, int8_weights, break_op)
        if getattr(block, "use_res_connect", False):
            out = g.tensor(g.tensors[current]["shape"])
            g.op("ADD", [current, block_input], [out])
            current = out
    channels = g.tensors[current]["shape"][-1]
    pooled = g.tensor([1, 1, 1, channels])
    g.op("AVERAGE_POOL_2D", [current], [pooled], filter=size, padding="VALID", stride=size)
    linear = model.net.classifier[1]
    head_weight = g.tensor([CLASSES, 1, 1, channels],
                           data=linear.weight.detach().numpy().reshape(CLASSES, 1, 1, channels))
    head_bias = g.tensor([CLASSES], data=linear.bias.detach().numpy())
    logits4 = g.tensor([1, 1, 1, CLASSES])
    g.op("CONV_2D", [pooled, head_weight, head_bias], [logits4])
    new_shape = g.tensor([2], dtype="INT32", data=np.array([1, CLASSES], dtype=np.int32))
    logits = g.tensor([1, CLASSES])
    g.op("RESHAPE", [logits4, new_shape], [logits])
    probabilities = g.tensor([1, CLASSES], name="probabilities")
    g.op("SOFTMAX", [logits], [probabilities])
    return g.write(path, [first], [probabilities])


def _fold(conv: nn.Conv2d, bn: nn.BatchNorm2d) -> tuple[torch.Tensor, torch.Tensor]:
    """(weight, bias) of ``conv`` followed by ``bn`` in eval mode, as one conv."""
    factor = (bn.weight / torch.sqrt(bn.running_var + bn.eps)).detach()
    return conv.weight.detach() * factor.view(-1, 1, 1, 1), (bn.bias - bn.running_mean * factor).detach()


def _write_conv(g: GraphWriter, current: int, size: int, conv: nn.Conv2d, bn: nn.BatchNorm2d, relu6: bool,
                int8_weights: bool, break_op: int | None) -> tuple[int, int]:
    """Append ``conv`` with ``bn`` folded into it; (its output tensor, its output size)."""
    weight, bias = _fold(conv, bn)
    weight, bias = weight.numpy(), bias.numpy().astype(np.float32)
    depthwise = conv.groups > 1
    # torch [out, in/groups, kh, kw] -> TFLite conv [out, kh, kw, in], depthwise [1, kh, kw, out]
    tf_weight = weight.transpose(1, 2, 3, 0) if depthwise else weight.transpose(0, 2, 3, 1)
    axis = 3 if depthwise else 0
    if int8_weights:
        values, scale = _quantize_per_channel(tf_weight, axis)
        weight_tensor = g.tensor(tf_weight.shape, dtype="INT8", data=values, scale=scale,
                                 zero_point=np.zeros_like(scale, dtype=np.int64), axis=axis)
    else:
        weight_tensor = g.tensor(tf_weight.shape, data=tf_weight.astype(np.float32))
    bias_tensor = g.tensor([bias.size], data=bias)
    size = -(-size // conv.stride[0])
    out = g.tensor([1, size, size, conv.out_channels])
    activation = "RELU" if break_op == len(g.ops) else "RELU6" if relu6 else "NONE"
    g.op("DEPTHWISE_CONV_2D" if depthwise else "CONV_2D", [current, weight_tensor, bias_tensor], [out],
         stride=conv.stride[0], activation=activation)
    return out, size


@pytest.fixture(scope="module")
def float_file(tmp_path_factory):
    model = random_mobilenet()
    path = write_mobilenet(model, tmp_path_factory.mktemp("tflite") / "tiny_mobilenet_v2.tflite")
    return model, path


# ---------------------------------------------------------------- arithmetic


def test_dequantize_per_tensor_uint8_and_int32_bias():
    values = np.array([0, 1, 127, 128, 255], dtype=np.uint8)
    # scale 0.5, zero point 128: 0.5 * (q - 128), by hand
    assert dequantize(values, [0.5], [128]).tolist() == [-64.0, -63.5, -0.5, 0.0, 63.5]
    bias = np.array([-1000, 0, 4096], dtype=np.int32)
    assert dequantize(bias, [0.25], [0]).tolist() == [-250.0, 0.0, 1024.0]


def test_dequantize_per_channel_int8_along_the_named_axis():
    values = np.array([[[[-127, 1]]], [[[64, -2]]]], dtype=np.int8)  # [2, 1, 1, 2]
    out_channels = dequantize(values, [0.1, 2.0], [0, 0], axis=0)
    np.testing.assert_allclose(out_channels.reshape(2, 2), [[-12.7, 0.1], [128.0, -4.0]], rtol=1e-6)
    last_axis = dequantize(values, [0.1, 2.0], [0, 1], axis=3)  # zero point 1 on the second channel
    np.testing.assert_allclose(last_axis.reshape(2, 2), [[-12.7, 0.0], [6.4, -6.0]], rtol=1e-6)
    with pytest.raises(ArtifactError, match="3 scales along axis 0"):
        dequantize(values, [1.0, 2.0, 3.0], [0], axis=0)


def test_uint8_input_quantization_becomes_mean_and_std_for_images_in_0_1():
    tensor = TFLiteTensor(0, "input", (1, 224, 224, 3), "UINT8", np.array([0.0078125], np.float32),
                          np.array([128]), 0, None)
    mean, std = input_normalization(tensor)
    assert mean == std == [128 / 255] * 3
    pixels = np.arange(256)
    x = pixels / 255.0  # what an mltk classifier is given
    np.testing.assert_allclose((x - mean[0]) / std[0], 0.0078125 * (pixels - 128), atol=1e-12)
    int8 = dataclasses.replace(tensor, type_name="INT8", zero_point=np.array([0]))
    mean8, std8 = input_normalization(int8)
    # an int8 input holds pixel - 128
    np.testing.assert_allclose((x - mean8[0]) / std8[0], 0.0078125 * (pixels - 128 - 0), atol=1e-12)
    assert input_normalization(dataclasses.replace(tensor, type_name="FLOAT32", scale=None)) is None


@pytest.mark.parametrize(("size", "kernel", "stride", "expected"), [
    (224, 3, 2, (0, 1)),  # even map, stride 2: the extra row goes at the bottom
    (7, 3, 2, (1, 1)),  # odd map: symmetric
    (112, 3, 1, (1, 1)),
    (56, 1, 2, (0, 0)),
    (5, 3, 3, (0, 1)),  # out 2: (2-1)*3+3-5 = 1
])
def test_tf_same_padding_by_hand(size, kernel, stride, expected):
    assert tf_same_padding(size, kernel, stride) == expected


def test_strided_conv_pads_like_tf_same_and_unlike_torchvision():
    torch.manual_seed(0)
    conv = nn.Conv2d(2, 3, 3, stride=2, padding=1, bias=False)
    x = torch.randn(1, 2, 6, 6)
    symmetric = conv(x)
    tf_conv = use_tf_same_padding(copy.deepcopy(conv))
    use_tf_same_padding(tf_conv)  # twice must not pad twice
    ours = tf_conv(x)
    # TF SAME on 6 px, kernel 3, stride 2: 3 outputs reading rows 2i..2i+2, with one zero row at the bottom.
    padded = np.zeros((2, 7, 7))
    padded[:, :6, :6] = x[0].numpy()
    w = conv.weight.detach().numpy()
    by_hand = np.array([[[np.sum(w[o] * padded[:, 2 * i:2 * i + 3, 2 * j:2 * j + 3]) for j in range(3)]
                         for i in range(3)] for o in range(3)])
    np.testing.assert_allclose(ours[0].detach().numpy(), by_hand, rtol=1e-5, atol=1e-6)
    assert not torch.allclose(symmetric, ours, atol=1e-3)
    assert set(tf_conv.state_dict()) == {"weight"}  # the padding adds no key


# ---------------------------------------------------------------- a whole network


def test_float_mobilenet_round_trips_with_batchnorm_folded(float_file):
    model, path = float_file
    imported = mobilenet_v2_from_tflite(path)  # the width is found from the file
    assert imported.width_mult == WIDTH and imported.input_type == "FLOAT32"
    assert imported.model.args["num_classes"] == CLASSES and imported.model.args["image_size"] == SIZE
    reference = use_tf_same_padding(copy.deepcopy(model))  # the exported graph pads like TF
    images = torch.rand(3, 3, SIZE, SIZE)
    with torch.no_grad():
        features, expected = imported.model.embed(images), reference.embed(images)
        assert expected.std(dim=0).mean() > 0.1  # features that depend on the image
        torch.testing.assert_close(features, expected, rtol=1e-4, atol=1e-4 * expected.abs().max().item())
        torch.testing.assert_close(imported.model(images), reference(images), rtol=1e-4, atol=1e-4)
        assert not torch.allclose(model(images), reference(images), atol=1e-2)  # torchvision's padding differs
    bn = imported.model.net.features[0][1]
    x = torch.randn(2, bn.num_features, 4, 4)
    assert torch.equal(bn(x), x + bn.bias.view(1, -1, 1, 1))  # folded BatchNorm: only the bias is left


def test_tiny_float_mobilenet_agrees_with_the_interpreter(float_file):
    interpreter_module = pytest.importorskip("ai_edge_litert.interpreter",
                                             reason="ai-edge-litert (the TFLite interpreter) is not installed")
    _, path = float_file
    interpreter = interpreter_module.Interpreter(model_path=str(path))
    interpreter.allocate_tensors()
    images = np.random.default_rng(0).random((2, SIZE, SIZE, 3), dtype=np.float32)
    expected = []
    for image in images:
        interpreter.set_tensor(interpreter.get_input_details()[0]["index"], image[None])
        interpreter.invoke()
        expected.append(interpreter.get_tensor(interpreter.get_output_details()[0]["index"])[0])
    model = mobilenet_v2_from_tflite(path).model
    with torch.no_grad():
        ours = torch.softmax(model(torch.from_numpy(images).permute(0, 3, 1, 2) * 0.5 + 0.5), dim=1)
    # The float file takes its input as given; mltk's default normalisation maps [0, 1] to [-1, 1].
    np.testing.assert_allclose(ours.numpy(), np.stack(expected), rtol=1e-3, atol=1e-5)


def test_int8_per_channel_weights_come_back_within_half_a_step(tmp_path):
    model = random_mobilenet(1)
    path = write_mobilenet(model, tmp_path / "int8.tflite", int8_weights=True)
    imported = mobilenet_v2_from_tflite(path).model
    pairs = {"features.0.0": "features.0.1", "features.4.conv.1.0": "features.4.conv.1.1",
             "features.17.conv.2": "features.17.conv.3"}  # a stem, a depthwise and a projection conv
    for name, norm in pairs.items():
        conv = imported.net.get_submodule(name)
        folded, _ = _fold(model.net.get_submodule(name), model.net.get_submodule(norm))
        step = folded.abs().flatten(1).max(1).values / 127
        error = (conv.weight - folded).abs().flatten(1).max(1).values
        assert torch.all(error <= step / 2 + 1e-6), name
        assert not torch.equal(conv.weight, folded)  # they were quantized


def test_the_first_op_that_does_not_fit_is_named(tmp_path):
    g = GraphWriter()
    image = g.tensor([1, 8, 8, 3])
    pooled = g.tensor([1, 4, 4, 3])
    g.op("MAX_POOL_2D", [image], [pooled], filter=2, stride=2)
    path = g.write(tmp_path / "pool.tflite", [image], [pooled])
    with pytest.raises(ArtifactError, match=r"op 0 \(MAX_POOL_2D\) does not fit MobileNetV2: a different operator"):
        mobilenet_v2_from_tflite(path)


def test_a_departure_deep_in_the_graph_is_named_by_its_index(tmp_path, float_file):
    model, _ = float_file
    path = write_mobilenet(model, tmp_path / "relu.tflite", break_op=4)
    with pytest.raises(ArtifactError, match=r"op 4 \(DEPTHWISE_CONV_2D\) does not fit MobileNetV2: "
                                            r"activation RELU; expected DEPTHWISE_CONV_2D for features.2.conv.1.0"):
        mobilenet_v2_from_tflite(path)


def test_not_a_tflite_file_and_a_truncated_one_are_refused(tmp_path, float_file):
    path = tmp_path / "weights.tflite"
    path.write_bytes(b"\x00" * 64)
    with pytest.raises(ArtifactError, match="not a TFLite flatbuffer"):
        mobilenet_v2_from_tflite(path)
    content = float_file[1].read_bytes()
    path.write_bytes(content[:len(content) // 2])
    with pytest.raises(ArtifactError, match="damaged TFLite flatbuffer"):
        mobilenet_v2_from_tflite(path)


def test_without_the_tflite_package_the_error_names_the_extra(monkeypatch, float_file):
    monkeypatch.setitem(sys.modules, "tflite", None)  # makes `import tflite` raise ImportError
    with pytest.raises(UsageError, match=r"mltk\[tflite\]"):
        mobilenet_v2_from_tflite(float_file[1])


def test_import_weights_takes_the_task_from_the_file(tmp_path, float_file):
    model, path = float_file
    labels = tmp_path / "tiny_mobilenet_v2_labels.txt"
    labels.write_text("\n".join(f"class {i}" for i in range(CLASSES)) + "\n")
    local = tmp_path / path.name
    local.write_bytes(path.read_bytes())
    registry = Registry(tmp_path / "home")
    record = import_weights(local, arch="mobilenet_v2", registry=registry)
    card = record.card()
    assert card["arch"]["args"]["num_classes"] == CLASSES and card["arch"]["args"]["width_mult"] == WIDTH
    assert card["task"]["class_names"] == [f"class {i}" for i in range(CLASSES)]
    loaded = load_classifier(record.ref, registry).model.eval()
    imported = mobilenet_v2_from_tflite(local).model
    assert all(torch.equal(loaded.state_dict()[key], value) for key, value in imported.state_dict().items())
    assert card["arch"]["args"]["tf_padding"] is True  # the card rebuilds TF's padding, not torchvision's
    images = torch.rand(2, 3, SIZE, SIZE)
    with torch.no_grad():
        torch.testing.assert_close(loaded(images), imported.eval()(images))
    with pytest.raises(UsageError, match="--num-classes 1000 but the file has 5"):
        import_weights(local, arch="mobilenet_v2", num_classes=1000, registry=registry)
    with pytest.raises(UsageError, match="as mobilenet_v2 only"):
        import_weights(local, arch="resnet20", registry=registry)


# ---------------------------------------------------------------- the real quantized ImageNet file


def _crop(path: Path, size: int = 224) -> np.ndarray:
    image = Image.open(path).convert("RGB")
    scale = size / min(image.size)
    image = image.resize((max(size, round(image.size[0] * scale)), max(size, round(image.size[1] * scale))),
                         Image.BILINEAR)
    left, top = (image.size[0] - size) // 2, (image.size[1] - size) // 2
    return np.asarray(image.crop((left, top, left + size, top + size)), dtype=np.uint8)


@pytest.mark.skipif(not SHARED_MODEL.is_file(), reason=f"{SHARED_MODEL} is not here")
def test_shared_quantized_mobilenet_agrees_with_the_interpreter(tmp_path):
    interpreter_module = pytest.importorskip("ai_edge_litert.interpreter",
                                             reason="ai-edge-litert (the TFLite interpreter) is not installed")
    files = sorted(FOOLBOX.glob("imagenet_*.jpg"))[:8]
    if not files:
        pytest.skip(f"no ImageNet samples in {FOOLBOX}")
    registry = Registry(tmp_path / "home")
    record = import_weights(SHARED_MODEL, arch="mobilenet_v2", registry=registry)
    card = record.card()
    assert card["arch"]["args"]["num_classes"] == 1001 and card["task"]["class_names"][0] == "background"
    assert card["arch"]["mean"] == card["arch"]["std"] == [128 / 255] * 3
    images = np.stack([_crop(path) for path in files])
    interpreter = interpreter_module.Interpreter(model_path=str(SHARED_MODEL))
    interpreter.allocate_tensors()
    expected = []
    for image in images:
        interpreter.set_tensor(interpreter.get_input_details()[0]["index"], image[None])
        interpreter.invoke()
        expected.append(interpreter.get_tensor(interpreter.get_output_details()[0]["index"])[0].argmax())
    model = load_classifier(record.ref, registry).model.eval()  # pads like TF: the card keeps tf_padding
    with torch.no_grad():
        ours = model(torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255).argmax(1).numpy()
    assert (ours == np.array(expected)).mean() >= 7 / 8, (ours, expected)
    labels = np.array([int(path.stem.rsplit("_", 1)[1]) + 1 for path in files])  # +1: background is class 0
    assert (ours == labels).mean() >= 5 / 8  # a real ImageNet classifier, not just a faithful copy
