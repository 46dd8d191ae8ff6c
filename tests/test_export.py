"""ONNX export: BN folded, contract names and shapes, ONNX Runtime equals PyTorch, fp16 storage, metadata."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest

torch = pytest.importorskip("torch")
onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

from fastcell.export import export_onnx  # noqa: E402
from fastcell.model.attentionnet import AttentionNet  # noqa: E402
from fastcell.spec import HEAD_ANCHORS, ModelSpec  # noqa: E402

CLASSES = ("WBC", "RBC", "Platelets")
ANCHORS = np.array([[27, 26], [55, 63], [71, 55], [69, 70], [83, 76], [141, 127]], np.float32)


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    m = AttentionNet(3).eval()
    for mod in m.modules():  # non-trivial BN statistics, so folding matters
        if isinstance(mod, torch.nn.BatchNorm2d):
            mod.running_mean.uniform_(-0.2, 0.2)
            mod.running_var.uniform_(0.5, 1.5)
    return m


def _real_inputs(paths):
    from fastcell.ops import letterbox_batch
    import cv2

    batch, _ = letterbox_batch([cv2.imread(str(p)) for p in paths])
    return batch


def test_fp32_export_matches_torch_and_follows_the_contract(model, tmp_path, bccd_images):
    spec = export_onnx(model=model, classes=CLASSES, anchors=ANCHORS, out_dir=tmp_path, name="t",
                       verify_images=bccd_images[:2])
    assert spec.path == (tmp_path / "model.json").resolve()
    loaded = ModelSpec.load(tmp_path)
    assert loaded.classes == CLASSES and loaded.input_size == 416
    np.testing.assert_allclose(loaded.anchors, ANCHORS, atol=1e-3)
    assert [(h.output, h.stride, h.anchors) for h in loaded.heads] == [("p5", 32, HEAD_ANCHORS[32]), ("p4", 16, HEAD_ANCHORS[16])]
    onnx_path = tmp_path / "model.onnx"
    assert loaded.extra["sha256"] == hashlib.sha256(onnx_path.read_bytes()).hexdigest()
    assert loaded.extra["export"]["max_abs_diff_vs_torch"] < 1e-3

    proto = onnx.load(str(onnx_path))
    assert proto.opset_import[0].version >= 17
    assert not any(n.op_type == "BatchNormalization" for n in proto.graph.node)
    assert [i.name for i in proto.graph.input] == ["images"]
    assert [o.name for o in proto.graph.output] == ["p5", "p4"]

    # dynamic batch: three real images in one call, compared with PyTorch on the same input
    x = _real_inputs(bccd_images[:3])
    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    p5, p4 = session.run(["p5", "p4"], {"images": x})
    assert p5.shape == (3, 24, 13, 13) and p4.shape == (3, 24, 26, 26)
    with torch.no_grad():
        t5, t4 = model(torch.from_numpy(x))
    np.testing.assert_allclose(p5, t5.numpy(), atol=1e-3)
    np.testing.assert_allclose(p4, t4.numpy(), atol=1e-3)


def test_fp16_weights_halve_the_file_and_compute_in_fp32(model, tmp_path, bccd_images):
    fp32 = export_onnx(model=model, classes=CLASSES, anchors=ANCHORS, out_dir=tmp_path / "a")
    fp16 = export_onnx(model=model, classes=CLASSES, anchors=ANCHORS, out_dir=tmp_path / "b", weights="fp16")
    assert fp16.extra["bytes"] < 0.52 * fp32.extra["bytes"]
    proto = onnx.load(str(tmp_path / "b" / "model.onnx"))
    assert sum(n.op_type == "Cast" for n in proto.graph.node) >= 13  # one per conv weight
    assert proto.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    x = _real_inputs(bccd_images[:2])
    a = ort.InferenceSession(str(tmp_path / "a" / "model.onnx"), providers=["CPUExecutionProvider"]).run(None, {"images": x})
    b = ort.InferenceSession(str(tmp_path / "b" / "model.onnx"), providers=["CPUExecutionProvider"]).run(None, {"images": x})
    assert all(o.dtype == np.float32 for o in b)
    for u, v in zip(a, b):  # only the weight rounding differs: small against the logits' spread
        assert np.abs(u - v).max() < 0.05 * np.abs(u).max()


def test_mismatched_spec_is_refused(model, tmp_path):
    spec = ModelSpec(classes=("only",), anchors=ANCHORS)
    with pytest.raises(ValueError, match="classes"):
        export_onnx(model=model, spec=spec, out_dir=tmp_path)


def test_export_cli_writes_onnx_json_and_a_calibrated_int8_model(model, tmp_path, bccd_images):
    """``fastcell export CKPT --out DIR --calib IMAGES``: the three files, and int8 runs close to fp32."""
    from fastcell.cli import main
    from fastcell.runtime import open_backend

    checkpoint = tmp_path / "last.pt"
    torch.save({"classes": list(CLASSES), "anchors": ANCHORS.tolist(), "input_size": 416,
                "model": model.state_dict()}, checkpoint)
    out = tmp_path / "engine"
    assert main(["export", str(checkpoint), "--out", str(out), "--calib", *map(str, bccd_images[:4])]) == 0
    assert {p.name for p in out.iterdir()} >= {"model.onnx", "model.json", "model_int8.onnx"}
    # the weights really are int8: about half the fp16-weights file (a quantiser that skipped the
    # fp16 + Cast weights would leave it as large as the float model)
    assert (out / "model_int8.onnx").stat().st_size < 0.6 * (out / "model.onnx").stat().st_size
    spec = ModelSpec.load(out / "model.json")
    assert spec.extra["int8"]["file"] == "model_int8.onnx" and spec.extra["int8"]["calibration_images"] == 4
    batch = _real_inputs(bccd_images[4:6])  # images the calibration did not see
    fp32 = open_backend(spec, "onnxruntime", "fp32").infer(batch)
    int8_backend = open_backend(spec, "onnxruntime", "int8")
    assert int8_backend.precision == "int8"
    for a, b in zip(fp32, int8_backend.infer(batch)):
        # int8 error is a few percent of the output range (a broken calibration is ~100 %)
        assert np.abs(a - b).max() < 0.1 * (a.max() - a.min())


def test_float32_initializers_undo_fp16_storage_exactly(model, tmp_path):
    from fastcell.export.int8 import float32_initializers
    from fastcell.export.onnx import fp16_initializers

    spec = export_onnx(model=model, spec=ModelSpec(classes=CLASSES, anchors=ANCHORS), out_dir=tmp_path, weights="fp32")
    proto = onnx.load(str(spec.model_path))
    restored = float32_initializers(fp16_initializers(onnx.load(str(spec.model_path))))
    assert not any(n.op_type == "Cast" for n in restored.graph.node)
    assert {i.name for i in restored.graph.initializer} == {i.name for i in proto.graph.initializer}
    halves = {i.name: onnx.numpy_helper.to_array(i) for i in proto.graph.initializer}
    for init in restored.graph.initializer:
        array = onnx.numpy_helper.to_array(init)
        assert array.dtype == np.float32
        expected = halves[init.name] if array.size < 1024 else halves[init.name].astype(np.float16).astype(np.float32)
        np.testing.assert_array_equal(array, expected)
