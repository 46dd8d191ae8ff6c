"""Fine-tuning a shipped model: its ONNX weights back in a trainable AttentionNet."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
ort = pytest.importorskip("onnxruntime")

from fastcell.model.attentionnet import AttentionNet  # noqa: E402
from fastcell.model.onnx_weights import calibrate_batchnorm, load_onnx_weights  # noqa: E402

MODEL = Path(__file__).resolve().parents[1] / "engines" / "bccd" / "model.onnx"


def test_loaded_weights_compute_the_onnx_graph_in_eval_and_after_calibration_in_training():
    x = np.random.default_rng(0).random((2, 3, 416, 416), dtype=np.float32)
    session = ort.InferenceSession(str(MODEL), providers=["CPUExecutionProvider"])
    reference = session.run(None, {session.get_inputs()[0].name: x})
    model = load_onnx_weights(AttentionNet(3), MODEL).eval()
    with torch.no_grad():
        heads = model(torch.from_numpy(x))
    for ref, out in zip(reference, heads):
        assert np.abs(ref - out.numpy()).max() < 1e-4
    # a training-mode BatchNorm normalises with the batch's statistics: uncalibrated, that would
    # undo the folded weights; calibrated on this batch it gives the ONNX model again
    import copy

    uncalibrated = copy.deepcopy(model).train()
    with torch.no_grad():
        raw = uncalibrated(torch.from_numpy(x))
    assert np.abs(reference[0] - raw[0].numpy()).max() > 0.1
    model.train()
    calibrate_batchnorm(model, [torch.from_numpy(x)])
    assert model.training  # left in the mode it was given in
    with torch.no_grad():
        trained = model(torch.from_numpy(x))
        evaluated = model.eval()(torch.from_numpy(x))
    for ref, a, b in zip(reference, trained, evaluated):
        # heads reach ±17; the BatchNorms' float32 statistics cost a few 1e-4 over 20 layers
        assert np.abs(ref - a.numpy()).max() < 1e-2
        assert np.abs(ref - b.numpy()).max() < 1e-2


def test_loading_into_a_network_of_another_class_count_is_refused():
    with pytest.raises(ValueError, match="classes"):
        load_onnx_weights(AttentionNet(1), MODEL)
