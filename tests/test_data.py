"""Label readers (VOC, YOLO, COCO) with bad labels reported, and augmentations that move boxes right."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from fastcell.data.augment import Augment, augment_sample, letterbox_uint8, mosaic
from fastcell.data.labels import load_labels, read_coco, read_voc, read_yolo


# -- BCCD (real) -----------------------------------------------------------------------------------
def test_bccd_splits_and_the_two_zero_size_boxes(bccd_dir):
    seen = {}
    for split, count in (("train", 205), ("val", 87), ("test", 72)):
        labels = read_voc(bccd_dir, split)
        assert len(labels) == count
        assert labels.classes == ("WBC", "RBC", "Platelets")
        for issue in labels.issues:
            seen[issue.file.name] = issue
    # BCCD's known flaws: one zero-size RBC each in BloodImage_00338 and BloodImage_00343
    assert sorted(seen) == ["BloodImage_00338.xml", "BloodImage_00343.xml"]
    issue = seen["BloodImage_00338.xml"]
    assert "zero-size" in issue.reason and issue.line > 1
    # the reported line is the <object> element holding the bad box
    lines = (bccd_dir / "Annotations" / "BloodImage_00338.xml").read_text().splitlines()
    assert lines[issue.line - 1].strip() == "<object>"
    assert "504" in "".join(lines[issue.line - 1:issue.line + 12])


def test_bccd_boxes_are_inside_images_and_converted_from_one_based(bccd_dir):
    labels = read_voc(bccd_dir, "test")
    boxes, ids = labels.all_boxes()
    assert len(boxes) == 945 and set(np.unique(ids)) == {0, 1, 2}
    assert (boxes[:, 2] > boxes[:, 0]).all() and (boxes[:, 3] > boxes[:, 1]).all()
    assert boxes.min() >= 0 and boxes[:, 2].max() <= 640 and boxes[:, 3].max() <= 480


# -- synthetic files with every kind of bad label ---------------------------------------------------
def _voc(tmp_path: Path) -> Path:
    root = tmp_path / "voc"
    (root / "Annotations").mkdir(parents=True)
    (root / "JPEGImages").mkdir()
    (root / "ImageSets" / "Main").mkdir(parents=True)
    cv2.imwrite(str(root / "JPEGImages" / "a.jpg"), np.zeros((100, 200, 3), np.uint8))
    objects = [("cell", 11, 21, 50, 60), ("cell", 30, 30, 30, 40), ("ghost", 1, 1, 10, 10), ("cell", 150, 50, 260, 90)]
    body = "".join(
        f"\n\t<object>\n\t\t<name>{n}</name>\n\t\t<bndbox>\n\t\t\t<xmin>{x1}</xmin>\n\t\t\t<ymin>{y1}</ymin>"
        f"\n\t\t\t<xmax>{x2}</xmax>\n\t\t\t<ymax>{y2}</ymax>\n\t\t</bndbox>\n\t</object>"
        for n, x1, y1, x2, y2 in objects
    )
    (root / "Annotations" / "a.xml").write_text(
        f"<annotation>\n\t<filename>a.jpg</filename>\n\t<size><width>200</width><height>100</height></size>{body}\n</annotation>\n")
    (root / "ImageSets" / "Main" / "train.txt").write_text("a\n")
    return root


def test_voc_bad_labels_are_reported_with_line_and_skipped(tmp_path):
    root = _voc(tmp_path)
    labels = read_voc(root, "train", classes=("cell",))
    np.testing.assert_array_equal(labels.samples[0].boxes, [[10, 20, 50, 60]])
    text = (root / "Annotations" / "a.xml").read_text().splitlines()
    object_lines = [n for n, line in enumerate(text, 1) if line.strip() == "<object>"]
    reasons = {i.line: i.reason for i in labels.issues}
    assert sorted(reasons) == object_lines[1:]  # the 2nd, 3rd and 4th objects are bad
    second, third, fourth = object_lines[1:]
    assert "zero-size" in reasons[second]
    assert "unknown class 'ghost'" in reasons[third]
    assert "outside the 200x100 image" in reasons[fourth]
    assert all(i.file.name == "a.xml" for i in labels.issues)


def test_voc_missing_split_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="no split 'val'"):
        read_voc(_voc(tmp_path), "val")


def test_yolo_txt_and_data_yaml(tmp_path):
    (tmp_path / "images" / "train").mkdir(parents=True)
    (tmp_path / "labels" / "train").mkdir(parents=True)
    cv2.imwrite(str(tmp_path / "images" / "train" / "x.png"), np.zeros((50, 100, 3), np.uint8))
    (tmp_path / "labels" / "train" / "x.txt").write_text(
        "0 0.5 0.5 0.2 0.4\n"  # good: 40..60 × 15..35
        "3 0.5 0.5 0.1 0.1\n"  # unknown class
        "1 0.5 0.5 0 0.2\n"  # zero width
        "1 1.2 0.5 0.2 0.2\n"  # outside
        "1 0.5 oops 0.1 0.1\n"  # unparsable
    )
    (tmp_path / "data.yaml").write_text("path: .\ntrain: images/train\nnames:\n  - rbc\n  - wbc\n")
    labels = load_labels(tmp_path, "train")
    assert labels.classes == ("rbc", "wbc")
    np.testing.assert_allclose(labels.samples[0].boxes, [[40, 15, 60, 35]], atol=1e-4)
    assert [i.line for i in labels.issues] == [2, 3, 4, 5]
    assert "unknown class index 3" in labels.issues[0].reason
    assert read_yolo(tmp_path / "data.yaml").classes == ("rbc", "wbc")


def test_coco_json(tmp_path):
    cv2.imwrite(str(tmp_path / "i.png"), np.zeros((40, 60, 3), np.uint8))
    data = {
        "images": [{"id": 7, "file_name": "i.png", "width": 60, "height": 40}],
        "categories": [{"id": 5, "name": "wbc"}, {"id": 2, "name": "rbc"}],
        "annotations": [
            {"id": 1, "image_id": 7, "category_id": 5, "bbox": [10, 5, 20, 10]},
            {"id": 2, "image_id": 7, "category_id": 9, "bbox": [1, 1, 2, 2]},
            {"id": 3, "image_id": 7, "category_id": 2, "bbox": [50, 5, 30, 10]},
            {"id": 4, "image_id": 7, "category_id": 2, "bbox": [0, 0, 0, 3]},
        ],
    }
    (tmp_path / "ann.json").write_text(json.dumps(data))
    labels = read_coco(tmp_path / "ann.json")
    assert labels.classes == ("rbc", "wbc")  # categories by id
    np.testing.assert_array_equal(labels.samples[0].boxes, [[10, 5, 30, 15]])
    np.testing.assert_array_equal(labels.samples[0].class_ids, [1])
    assert sorted(i.line for i in labels.issues) == [1, 2, 3]


def test_unknown_format_is_a_clear_error(tmp_path):
    with pytest.raises(ValueError, match="cannot tell the format"):
        load_labels(tmp_path)


# -- augmentations -----------------------------------------------------------------------------------
def test_letterbox_matches_the_deployed_one(bccd_images):
    ops = pytest.importorskip("fastcell.ops")
    image = cv2.imread(str(bccd_images[0]))
    ours, params = letterbox_uint8(image, 416)
    deployed, deployed_params = ops.letterbox(image, 416)
    np.testing.assert_array_equal(params, deployed_params)
    diff = np.abs(ours[:, :, ::-1].transpose(2, 0, 1) / 255.0 - deployed)
    assert diff.max() <= 1 / 255 + 1e-6


def _marked_image(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """A grey image with one pure-green rectangle; its box is the label."""
    image = np.full((300, 400, 3), 90, np.uint8)
    x1, y1 = int(rng.integers(20, 250)), int(rng.integers(20, 180))
    w, h = int(rng.integers(40, 120)), int(rng.integers(30, 100))
    image[y1:y1 + h, x1:x1 + w] = (0, 255, 0)
    return image, np.array([[x1, y1, x1 + w, y1 + h]], np.float32)


def _green_box(image: np.ndarray) -> np.ndarray:
    ys, xs = np.nonzero((image[:, :, 1] > 200) & (image[:, :, 0] < 60) & (image[:, :, 2] < 60))
    return np.array([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1], np.float32)


@pytest.mark.parametrize("seed", range(12))
def test_geometric_augmentations_move_boxes_with_pixels(seed):
    rng = np.random.default_rng(seed)
    image, box = _marked_image(rng)
    aug = Augment(mosaic=0.0, scale=0.4, translate=0.1, hsv_h=0, hsv_s=0, hsv_v=0, min_visible=0.99)
    out, boxes, ids = augment_sample(image, box, np.array([0]), 416, aug, rng)
    assert out.shape == (416, 416, 3) and out.dtype == np.uint8
    if len(boxes):  # kept only when (almost) entirely visible
        np.testing.assert_allclose(boxes[0], _green_box(out), atol=2.0)


def test_mosaic_keeps_every_visible_box_on_its_pixels():
    rng = np.random.default_rng(3)
    images, boxes = zip(*(_marked_image(rng) for _ in range(4)))
    aug = Augment(mosaic=1.0, scale=0.0, translate=0.0, flip_lr=0, flip_ud=0, rot90=False, hsv_h=0, hsv_s=0, hsv_v=0,
                  min_visible=0.99)
    for trial in range(5):
        out, b, c = mosaic(list(images), list(boxes), [np.array([i]) for i in range(4)], 416, aug,
                           np.random.default_rng(trial))
        for box in b:
            x1, y1, x2, y2 = np.round(box).astype(int)
            patch = out[y1:y2, x1:x2]
            assert (patch[:, :, 1] > 200).mean() > 0.9  # the box is filled by its green rectangle


def test_hsv_jitter_changes_colour_not_geometry():
    rng = np.random.default_rng(0)
    image, box = _marked_image(rng)
    aug = Augment(mosaic=0, scale=0, translate=0, flip_lr=0, flip_ud=0, rot90=False, hsv_h=0.02, hsv_s=0.5, hsv_v=0.3)
    out, boxes, _ = augment_sample(image, box, np.array([0]), 416, aug, rng)
    plain, plain_boxes, _ = augment_sample(image, box, np.array([0]), 416, Augment.none(), rng)
    np.testing.assert_array_equal(boxes, plain_boxes)
    assert not np.array_equal(out, plain)
