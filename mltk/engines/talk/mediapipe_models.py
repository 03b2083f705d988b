"""MediaPipe's face models as staged on disk, made loadable by the ``mediapipe`` package's Tasks API.

The staged files (``face_detection_short_range.tflite``: BlazeFace, 128 px;
``face_landmark.tflite``: the 468-point face mesh, 192 px) come from
MediaPipe's repository of 2022, before its Tasks API. Current ``mediapipe``
wheels ship no models and refuse these two as they are, for two reasons,
both fixed here in memory (the files on disk are never changed):

* a float input needs TFLite metadata naming its normalisation; we add it:
  BlazeFace takes pixels mapped to [-1, 1] (mean 127.5, std 127.5), the
  face mesh pixels in [0, 1] (mean 0, std 255), as MediaPipe's 2022 graphs
  fed them (``face_detection_short_range_cpu.pbtxt``,
  ``face_landmark_cpu.pbtxt``);
* the Tasks face landmarker always reads 478 points (the mesh plus 10 iris
  points of its newer model) from the landmark tensor and divides its size
  by 478 to find the coordinates per point; the 2022 model outputs 468 x 3,
  which that division misreads. We append a PAD operator that extends the
  landmark tensor with 30 zeros, so it reads 468 true points and 10 dummy
  ones, which ``faces.py`` drops.

The two models are then bundled, as the Tasks API expects, into a
``.task`` archive held in memory.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import numpy as np

from mltk.core.errors import DataMissingError
from mltk.core.paths import data_root

DETECTOR_FILE = "face_detection_short_range.tflite"
MESH_FILE = "face_landmark.tflite"
MESH_POINTS = 468
TASKS_MESH_POINTS = 478  # what the Tasks face landmarker reads
# Folders tried in order when no model folder is named.
MODEL_SUBFOLDERS = ("face_models/mediapipe", "mediapipe")


def find_model_folder(model_dir: str | Path | None = None) -> Path:
    """The folder holding both model files: ``model_dir``, else ``$MLTK_DATA/face_models/mediapipe``."""
    candidates = [Path(model_dir).expanduser()] if model_dir else [data_root() / sub for sub in MODEL_SUBFOLDERS]
    for folder in candidates:
        if (folder / DETECTOR_FILE).is_file() and (folder / MESH_FILE).is_file():
            return folder
    looked = ", ".join(str(folder) for folder in candidates)
    raise DataMissingError(f"MediaPipe face models not found (looked in {looked})",
                           hint=f"put {DETECTOR_FILE} and {MESH_FILE} in $MLTK_DATA/face_models/mediapipe "
                                "or pass model_dir")


def detector_model(folder: Path, schemas: Any) -> bytes:
    return _with_image_metadata((folder / DETECTOR_FILE).read_bytes(), schemas, mean=127.5, std=127.5)


def landmarker_bundle(folder: Path, schemas: Any, bundle_writer: Any) -> bytes:
    """The ``.task`` archive (a zip of the detector and the padded mesh model) the Tasks face landmarker reads."""
    mesh = _pad_first_output((folder / MESH_FILE).read_bytes(), schemas, 3 * (TASKS_MESH_POINTS - MESH_POINTS))
    mesh = _with_image_metadata(mesh, schemas, mean=0.0, std=255.0)
    archive = io.BytesIO()
    with bundle_writer.AlignZipFile(archive, mode="w", alignment=4) as bundle:
        bundle.writestr("face_detector.tflite", detector_model(folder, schemas))
        bundle.writestr("face_landmarks_detector.tflite", mesh)
    return archive.getvalue()


def _read(model: bytes, schemas: Any) -> Any:
    tflite = schemas.tflite
    return tflite.ModelT.InitFromObj(tflite.Model.GetRootAsModel(model, 0))


def _write(model: Any, schemas: Any) -> bytes:
    builder = schemas.flatbuffers.Builder(0)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    return bytes(builder.Output())


def _with_image_metadata(model_bytes: bytes, schemas: Any, *, mean: float, std: float) -> bytes:
    """The model with TFLite metadata saying: input 0 is an RGB image normalised as (x - mean) / std."""
    meta = schemas.metadata
    image = meta.TensorMetadataT()
    image.name = "image"
    image.content = meta.ContentT()
    image.content.contentPropertiesType = meta.ContentProperties.ImageProperties
    image.content.contentProperties = meta.ImagePropertiesT()
    image.content.contentProperties.colorSpace = meta.ColorSpaceType.RGB
    normalisation = meta.ProcessUnitT()
    normalisation.optionsType = meta.ProcessUnitOptions.NormalizationOptions
    normalisation.options = meta.NormalizationOptionsT()
    normalisation.options.mean, normalisation.options.std = [mean], [std]
    image.processUnits = [normalisation]
    model = _read(model_bytes, schemas)
    subgraph = meta.SubGraphMetadataT()
    subgraph.inputTensorMetadata = [image]
    subgraph.outputTensorMetadata = [meta.TensorMetadataT() for _ in model.subgraphs[0].outputs]
    description = meta.ModelMetadataT()
    description.name = "mltk-adapted mediapipe model"
    description.subgraphMetadata = [subgraph]
    description.minParserVersion = "1.0.0"
    builder = schemas.flatbuffers.Builder(0)
    builder.Finish(description.Pack(builder), file_identifier=b"M001")
    model.buffers.append(_buffer(schemas, np.frombuffer(bytes(builder.Output()), np.uint8)))
    entry = schemas.tflite.MetadataT()
    entry.name, entry.buffer = "TFLITE_METADATA", len(model.buffers) - 1
    model.metadata = [*(model.metadata or []), entry]
    return _write(model, schemas)


def _pad_first_output(model_bytes: bytes, schemas: Any, extra: int) -> bytes:
    """The model with ``extra`` zeros appended to the last axis of its first output tensor."""
    tflite = schemas.tflite
    model = _read(model_bytes, schemas)
    graph = model.subgraphs[0]
    source = graph.tensors[graph.outputs[0]]
    model.buffers.append(_buffer(schemas, np.array([[0, 0]] * (len(source.shape) - 1) + [[0, extra]],
                                                   np.int32).view(np.uint8).ravel()))
    amounts = _tensor(schemas, [len(source.shape), 2], tflite.TensorType.INT32, len(model.buffers) - 1,
                      b"pad_amounts")
    model.buffers.append(_buffer(schemas, None))
    padded = _tensor(schemas, [*source.shape[:-1], int(source.shape[-1]) + extra], source.type,
                     len(model.buffers) - 1, b"landmarks_padded")
    graph.tensors += [amounts, padded]
    code = tflite.OperatorCodeT()
    code.builtinCode = code.deprecatedBuiltinCode = tflite.BuiltinOperator.PAD
    code.version = 1
    model.operatorCodes.append(code)
    pad = tflite.OperatorT()
    pad.opcodeIndex = len(model.operatorCodes) - 1
    pad.inputs, pad.outputs = [graph.outputs[0], len(graph.tensors) - 2], [len(graph.tensors) - 1]
    pad.builtinOptionsType, pad.builtinOptions = tflite.BuiltinOptions.PadOptions, tflite.PadOptionsT()
    graph.operators.append(pad)
    graph.outputs = [len(graph.tensors) - 1, *list(graph.outputs)[1:]]
    return _write(model, schemas)


def _buffer(schemas: Any, data: np.ndarray | None) -> Any:
    buffer = schemas.tflite.BufferT()
    buffer.data = data
    return buffer


def _tensor(schemas: Any, shape: list[int], dtype: int, buffer: int, name: bytes) -> Any:
    tensor = schemas.tflite.TensorT()
    tensor.shape, tensor.type, tensor.buffer, tensor.name = shape, dtype, buffer, name
    return tensor
