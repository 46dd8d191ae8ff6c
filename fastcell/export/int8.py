"""int8: static post-training quantisation of a model on real images (offline, once per model).

Writes ``model_int8.onnx`` (QDQ format: int8 weights per channel, uint8 activations with ranges
calibrated on the given images) beside ``model.onnx`` and names it in ``model.json["int8"]["file"]``,
which is where OpenVINO and ONNX Runtime look for it when run with ``precision="int8"``. Needs ONNX Runtime's quantisation tools and the ``onnx`` package
(``pip install "fastcell[train]"``). ``fastcell export CKPT --out DIR --calib IMAGES`` runs it after
export. Check the accuracy cost (``fastcell val DATA --model M --precision int8``)
before shipping it: calibration on too few or unrepresentative images loses small cells first.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np

from fastcell.defaults import INPUT_NAME
from fastcell.runtime._base import require
from fastcell.spec import ModelSpec

__all__ = ["quantize_int8", "float32_initializers", "INT8_FILE", "CALIBRATION_METHOD"]

#: the file name of the int8 model beside ``model.onnx`` (recorded in ``model.json["int8"]["file"]``)
INT8_FILE = "model_int8.onnx"
CALIBRATION_METHOD = "ONNX Runtime static QDQ, MinMax, per-channel int8 weights"


def quantize_int8(spec: ModelSpec, images: Iterable[str | Path | np.ndarray], *, limit: int = 64) -> Path:
    """Calibrate on ``images`` (paths or frames), write the int8 model beside the float one and record it.

    Parameters
    ----------
    spec : ModelSpec
        The float model (read from its ``model.json``, which gains an ``"int8"`` entry naming the
        new file, the number of calibration images and the method).
    images : iterable of path or ndarray
        Representative frames (e.g. the training split); at most ``limit`` are used. Files are
        read as ``fastcell annotate`` reads them (:func:`fastcell.io.sources.read_image`).

    Returns
    -------
    Path
        The written ``model_int8.onnx``.
    """
    require("onnx", "train", "int8 calibration")
    quant = require("onnxruntime.quantization", None, "int8 calibration")
    from fastcell.io.sources import read_image
    from fastcell.preprocess import Preprocessor

    pre = Preprocessor(spec.input_size, spec.pad_value, 1)
    used = 0

    class Reader(quant.CalibrationDataReader):
        def __init__(self) -> None:
            self._it = self._batches()

        def _batches(self) -> Iterator[dict[str, np.ndarray]]:
            nonlocal used
            for i, image in enumerate(images):
                if i >= limit:
                    return
                frame = read_image(image) if not isinstance(image, np.ndarray) else image
                used += 1
                yield {INPUT_NAME: pre([frame])[0].copy()}

        def get_next(self):
            return next(self._it, None)

    out = spec.model_path.with_name(INT8_FILE)
    with tempfile.TemporaryDirectory() as tmp:
        # The quantiser only quantises weights it finds as float32 initializers; shipped models store
        # them as float16 + Cast, which it would leave in float (an "int8" model as large as the float one).
        float_model = Path(tmp) / "model_fp32.onnx"
        onnx = require("onnx", "train", "int8 calibration")
        onnx.save(float32_initializers(onnx.load(str(spec.model_path))), str(float_model))
        quant.quantize_static(str(float_model), str(out), Reader(), quant_format=quant.QuantFormat.QDQ,
                              activation_type=quant.QuantType.QUInt8, weight_type=quant.QuantType.QInt8,
                              per_channel=True, calibrate_method=quant.CalibrationMethod.MinMax)
    spec.extra["int8"] = {"file": out.name, "calibration_images": used, "calibration_method": CALIBRATION_METHOD}
    spec.save(spec.path)
    return out


def float32_initializers(model_proto):
    """Undo :func:`fastcell.export.onnx.fp16_initializers`: each float16 initializer read only through a
    Cast to float32 becomes a float32 initializer under the Cast's output name, and the Cast goes.

    Returns the ``onnx.ModelProto`` (changed in place).
    """
    from onnx import TensorProto, numpy_helper

    graph = model_proto.graph
    halves = {i.name: i for i in graph.initializer if i.data_type == TensorProto.FLOAT16}
    for node in list(graph.node):
        if node.op_type == "Cast" and len(node.input) == 1 and node.input[0] in halves \
                and node.attribute[0].i == TensorProto.FLOAT:
            half = halves[node.input[0]]
            graph.initializer.append(numpy_helper.from_array(numpy_helper.to_array(half).astype(np.float32),
                                                             name=node.output[0]))
            graph.initializer.remove(half)
            graph.node.remove(node)
    return model_proto
