"""Export a trained AttentionNet to ONNX with its metadata JSON (the deployment artefact).

``export_onnx`` folds BatchNorm into the convolutions, writes ``model.onnx`` (input
:data:`fastcell.defaults.INPUT_NAME` ``(N, 3, S, S)`` float32 RGB in [0, 1] with a dynamic batch;
outputs :data:`fastcell.defaults.OUTPUT_NAMES`, stride 32 first), checks
it against PyTorch with ONNX Runtime, and writes ``model.json`` through :class:`fastcell.spec.ModelSpec`
(classes, anchors, heads, input size, thresholds, HSV ranges, provenance, metrics, sha256).

``weights="fp16"`` stores the convolution weights as float16 initializers each followed by a
``Cast`` to float32, so every runtime still computes in float32 while the file is half the size.
"""

from __future__ import annotations

import hashlib
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch

from fastcell.defaults import INPUT_NAME, OUTPUT_NAMES
from fastcell.model.attentionnet import AttentionNet, fold_batchnorm
from fastcell.model.checkpoint import load_checkpoint_model
from fastcell.spec import ModelSpec, Segmentation, Thresholds

__all__ = ["export_onnx", "fp16_initializers", "sha256_of", "verify_onnx"]

OPSET = 17


def sha256_of(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def fp16_initializers(model_proto, min_elements: int = 1024):
    """Store float32 initializers with at least ``min_elements`` values as float16 + Cast(to float32).

    Returns the modified ``onnx.ModelProto`` (changed in place). Small tensors (biases) stay float32.
    """
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    graph = model_proto.graph
    casts = []
    for init in list(graph.initializer):
        if init.data_type != TensorProto.FLOAT:
            continue
        array = numpy_helper.to_array(init)
        if array.size < min_elements:
            continue
        half = numpy_helper.from_array(array.astype(np.float16), name=init.name + "_fp16")
        graph.initializer.remove(init)
        graph.initializer.append(half)
        casts.append(helper.make_node("Cast", [half.name], [init.name], to=TensorProto.FLOAT,
                                      name=f"cast_{init.name}"))
    for node in reversed(casts):  # Casts first, so the graph stays topologically sorted
        graph.node.insert(0, node)
    onnx.checker.check_model(model_proto)
    return model_proto


def _torch_export(model: torch.nn.Module, path: Path, size: int) -> None:
    dummy = torch.zeros(1, 3, size, size)
    with warnings.catch_warnings():
        # The TorchScript exporter is deprecated in favour of dynamo=True; it still gives the
        # smallest, plainest graph for this conv-only network, so its notices are silenced here.
        warnings.simplefilter("ignore")
        torch.onnx.export(
            model, (dummy,), str(path), input_names=[INPUT_NAME], output_names=list(OUTPUT_NAMES),
            dynamic_axes={name: {0: "batch"} for name in (INPUT_NAME, *OUTPUT_NAMES)},
            opset_version=OPSET, dynamo=False, do_constant_folding=True,
        )


def verify_onnx(onnx_path: str | Path, model: torch.nn.Module, images: np.ndarray) -> float:
    """Max absolute difference of the ONNX outputs (ONNX Runtime, CPU) from PyTorch's on ``images``.

    ``images`` is ``(N, 3, S, S)`` float32 RGB in [0, 1].
    """
    import onnxruntime as ort

    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    onnx_out = session.run(list(OUTPUT_NAMES), {INPUT_NAME: np.ascontiguousarray(images, np.float32)})
    with torch.no_grad():
        torch_out = model.eval()(torch.from_numpy(np.ascontiguousarray(images, np.float32)))
    return float(max(np.abs(a - b.numpy()).max() for a, b in zip(onnx_out, torch_out)))


def _letterboxed(paths: list[Path], size: int) -> np.ndarray:
    import cv2

    from fastcell.data.augment import letterbox_uint8

    out = []
    for p in paths:
        image = cv2.imread(str(p), cv2.IMREAD_COLOR)
        if image is None:
            raise FileNotFoundError(f"cannot read image {p}")
        lb, _ = letterbox_uint8(image, size)
        out.append(lb[:, :, ::-1].transpose(2, 0, 1).astype(np.float32) / 255.0)
    return np.stack(out)


def export_onnx(checkpoint: str | Path | None = None, out_dir: str | Path = "engines/model", *,
                model: AttentionNet | None = None, spec: ModelSpec | None = None,
                classes: tuple[str, ...] | None = None, anchors: np.ndarray | None = None,
                name: str | None = None, weights: str = "fp32", use_ema: bool = True,
                thresholds: Thresholds | None = None, segmentation: Segmentation | None = None,
                verify_images: list[str | Path] | np.ndarray | None = None,
                extra: dict[str, Any] | None = None, tolerance: float = 1e-3) -> ModelSpec:
    """Export a checkpoint (or an in-memory model) to ``out_dir/model.onnx`` + ``out_dir/model.json``.

    Parameters
    ----------
    checkpoint : path, optional
        A training checkpoint (``best.pt``/``last.pt``); gives weights, classes and anchors.
    out_dir : path
        Created if needed; ``model.onnx`` and ``model.json`` are (over)written there.
    model : AttentionNet, optional
        Export this model instead of a checkpoint (e.g. a randomly initialised one in tests).
    spec : ModelSpec, optional
        Metadata to start from (classes, anchors, thresholds…); its ``extra`` is kept.
    classes, anchors : optional
        Needed with ``model`` when no ``spec`` is given; ``anchors`` is ``(6, 2)`` pixels sorted by
        area. Default anchors for a bare model are the YOLOv3-tiny COCO ones.
    weights : {"fp32", "fp16"}
        Storage of the large weights (computation is float32 either way).
    verify_images : list of image paths or (N, 3, S, S) array, optional
        Checked against PyTorch; ``max_abs_diff`` goes into the metadata. Default: two random
        inputs. Raises when the difference exceeds ``tolerance``.
    extra : dict, optional
        More metadata (training data, licence, metrics …), merged into ``spec.extra``.

    Returns
    -------
    ModelSpec
        The written metadata (``spec.path`` points at ``model.json``).
    """
    import onnx

    if weights not in ("fp32", "fp16"):
        raise ValueError(f"weights must be 'fp32' or 'fp16', got {weights!r}")
    state: dict = {}
    if model is None:
        if checkpoint is None:
            raise ValueError("give a checkpoint or a model")
        model, state = load_checkpoint_model(checkpoint, use_ema)
    model = model.float().eval()
    size = model.input_size
    if spec is None:
        spec_classes = tuple(classes or state.get("classes") or (f"class{i}" for i in range(model.num_classes)))
        from fastcell.model.anchors import YOLOV3_TINY_COCO_ANCHORS

        spec_anchors = np.asarray(anchors if anchors is not None else state.get("anchors", YOLOV3_TINY_COCO_ANCHORS),
                                  np.float32).reshape(6, 2)
        spec = ModelSpec(classes=spec_classes, anchors=spec_anchors, input_size=size)
    if spec.num_classes != model.num_classes:
        raise ValueError(f"spec has {spec.num_classes} classes, the model {model.num_classes}")
    if spec.input_size != size:
        raise ValueError(f"spec input_size {spec.input_size} differs from the model's {size}")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    onnx_path = out_dir / spec.model_file
    folded = fold_batchnorm(model)
    _torch_export(folded, onnx_path, size)
    proto = onnx.load(str(onnx_path))
    proto.producer_name = "fastcell"
    if weights == "fp16":
        fp16_initializers(proto)
    onnx.save(proto, str(onnx_path))

    if verify_images is None:
        rng = np.random.default_rng(0)
        inputs = rng.random((2, 3, size, size), dtype=np.float32)
    elif isinstance(verify_images, np.ndarray):
        inputs = verify_images.astype(np.float32)
    else:
        inputs = _letterboxed([Path(p) for p in verify_images], size)
    diff = verify_onnx(onnx_path, model, inputs)
    if weights == "fp32" and diff > tolerance:
        raise RuntimeError(f"ONNX output differs from PyTorch by {diff:.3g} > {tolerance}")

    meta = dict(spec.extra)
    meta.update(extra or {})
    meta["export"] = {"opset": OPSET, "weights": weights, "batchnorm_folded": True,
                      "max_abs_diff_vs_torch": diff, "verified_on": int(len(inputs)),
                      "torch": torch.__version__, "onnx": onnx.__version__}
    if state:
        meta.setdefault("training", {}).update({
            "epochs": state.get("epoch"), "best_val_mAP50": state.get("best_map"),
            "weights": "ema" if use_ema else "model",
        })
    meta["sha256"] = sha256_of(onnx_path)
    meta["bytes"] = onnx_path.stat().st_size
    spec = spec.replace(
        name=name or spec.name,
        thresholds=thresholds or spec.thresholds,
        segmentation=segmentation or spec.segmentation,
        extra=meta,
    )
    json_path = spec.save(out_dir / "model.json")
    return ModelSpec.load(json_path)
