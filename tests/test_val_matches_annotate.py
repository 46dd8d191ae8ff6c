"""``fastcell val`` scores exactly the boxes ``fastcell annotate`` writes, for the same images and settings.

Both read files with :func:`fastcell.io.sources.read_image` (as stored: 16-bit and gray stay so)
and annotate with an :class:`~fastcell.annotator.Annotator` on the same backend. The reference here
is ``fastcell annotate``'s own COCO file, compared with the detections evaluation makes
(:func:`fastcell.evaluation.predict.predict_images`), and then fed back to ``fastcell val`` as the
ground truth: scoring annotate's boxes against themselves must give precision = recall = mAP = 1.
"""

from __future__ import annotations

import json
import shutil

import cv2
import numpy as np
import pytest

from fastcell.cli import main

pytestmark = pytest.mark.filterwarnings(  # pycocotools 2.0.x vs NumPy 2 (see test_writers.py)
    "ignore:__array__ implementation doesn't accept a copy keyword:DeprecationWarning"
)

SCORE = "0.3"  # not the model's own 0.32: the setting must reach both commands


@pytest.fixture(scope="module")
def images(tmp_path_factory, bccd_images):
    """Three real BCCD JPEGs, one as 8-bit gray, one as a 16-bit frame of a camera whose full scale is not 65535."""
    src = tmp_path_factory.mktemp("src")
    for path in bccd_images[:3]:
        shutil.copy(path, src / path.name)
    image = cv2.imread(str(bccd_images[3]))
    cv2.imwrite(str(src / "gray.png"), cv2.cvtColor(image, cv2.COLOR_BGR2GRAY))
    cv2.imwrite(str(src / "deep16.png"), image.astype(np.uint16) * 200 + 99)  # low byte not 0: 8-bit reading loses it
    return src


@pytest.fixture(scope="module")
def annotated(images, tmp_path_factory, default_model_json):
    """``fastcell annotate`` on ONNX Runtime: its COCO file, by image file name."""
    out = tmp_path_factory.mktemp("annotated")
    assert main(["annotate", str(images), "--out", str(out), "--model", str(default_model_json),
                 "--device", "onnxruntime", "--score", SCORE, "--write", "coco", "--quiet"]) == 0
    coco = json.loads((out / "annotations.json").read_text())
    by_id = {im["id"]: im["file_name"] for im in coco["images"]}
    boxes: dict[str, list] = {name: [] for name in by_id.values()}
    for ann in coco["annotations"]:
        boxes[by_id[ann["image_id"]]].append((*ann["bbox"], ann["score"], ann["category_id"] - 1))
    return coco, {name: np.asarray(rows, np.float64).reshape(-1, 6) for name, rows in boxes.items()}


def _as_coco(boxes, scores, ids) -> np.ndarray:
    """Detections as the COCO writer rounds them: x, y, w, h to 0.01 px, score to 1e-5."""
    xywh = np.column_stack([boxes[:, :2], boxes[:, 2:] - boxes[:, :2]]).astype(np.float64)
    return np.column_stack([xywh, scores, ids]).reshape(-1, 6)


def test_evaluation_predicts_the_boxes_annotate_writes(images, annotated, default_model_json):
    from fastcell.evaluation.predict import open_annotator, predict_images
    from fastcell.io.sources import read_image

    _, written = annotated
    names = sorted(written)
    assert {"gray.png", "deep16.png"} <= set(names) and len(names) == 5
    with open_annotator(default_model_json, "onnxruntime", score=float(SCORE)) as annotator:
        predicted = predict_images(annotator, [images / n for n in names], progress=False)
        # the reader matters: 8-bit colour reading (what evaluation used to do) moves boxes
        old = annotator(cv2.imread(str(images / "deep16.png"), cv2.IMREAD_COLOR))
    assert sum(len(p[0]) for p in predicted) > 50  # real cells, not an empty comparison
    for name, detections in zip(names, predicted):
        ours, theirs = _as_coco(*detections), written[name]
        assert ours.shape == theirs.shape, name
        np.testing.assert_allclose(ours[:, :4], theirs[:, :4], atol=0.006, err_msg=name)  # writer rounds to 0.01
        np.testing.assert_allclose(ours[:, 4], theirs[:, 4], atol=6e-6, err_msg=name)
        np.testing.assert_array_equal(ours[:, 5], theirs[:, 5], err_msg=name)
    assert read_image(images / "deep16.png").dtype == np.uint16
    deep = written["deep16.png"]
    moved = len(old) != len(deep) or np.abs(_as_coco(old.boxes, old.scores, old.class_ids)[:, :4] - deep[:, :4]).max() > 0.01
    assert moved, "the 16-bit test image does not tell the two readers apart"


def test_val_scores_annotates_output_as_perfect(images, annotated, default_model_json, tmp_path, capsys):
    """``fastcell val`` on annotate's own COCO file, same model, backend and score: every box is found."""
    coco, _ = annotated
    data = images / "annotations.json"  # COCO images are looked up beside the JSON
    data.write_text(json.dumps(coco))
    out = tmp_path / "report"
    assert main(["val", str(data), "--split", "", "--model", str(default_model_json), "--device", "onnxruntime",
                 "--score", SCORE, "--map-score", SCORE, "--out", str(out), "--no-progress"]) == 0
    report = json.loads((out / "report.json").read_text())
    assert report["images"] == 5 and report["backend"] == "onnxruntime fp32"
    assert report["precision"] == 1.0 and report["recall"] == 1.0
    assert report["mAP50"] == 1.0 and report["mAP50_95"] == 1.0
