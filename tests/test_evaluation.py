"""Evaluation: mAP against pycocotools on real predictions, P/R/F1, confusion, Table 2 rates, mask IoU."""

from __future__ import annotations

import contextlib
import dataclasses
import io

import numpy as np
import pytest

from fastcell.evaluation.frames import frame_rates
from fastcell.evaluation.metrics import best_score_threshold, confusion_matrix, evaluate_detections, f1_curve
from fastcell.evaluation.segmentation import mask_iou_dice



def _coco_map(predictions, ground_truth, num_classes):
    """AP per IoU threshold averaged over classes, by pycocotools (the independent reference)."""
    pytest.importorskip("pycocotools")
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    images, annotations, detections = [], [], []
    for i, ((pb, ps, pc), (gb, gc)) in enumerate(zip(predictions, ground_truth)):
        images.append({"id": i, "width": 640, "height": 480})
        for b, c in zip(np.asarray(gb).reshape(-1, 4), gc):
            annotations.append({"id": len(annotations) + 1, "image_id": i, "category_id": int(c) + 1, "iscrowd": 0,
                                "bbox": [float(b[0]), float(b[1]), float(b[2] - b[0]), float(b[3] - b[1])],
                                "area": float((b[2] - b[0]) * (b[3] - b[1]))})
        for b, s, c in zip(np.asarray(pb).reshape(-1, 4), ps, pc):
            detections.append({"image_id": i, "category_id": int(c) + 1, "score": float(s),
                               "bbox": [float(b[0]), float(b[1]), float(b[2] - b[0]), float(b[3] - b[1])]})
    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO()
        gt.dataset = {"images": images, "annotations": annotations,
                      "categories": [{"id": c + 1, "name": str(c)} for c in range(num_classes)]}
        gt.createIndex()
        dt = gt.loadRes(detections)
        ev = COCOeval(gt, dt, "bbox")
        ev.params.maxDets = [1, 10, 100]
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    precision = ev.eval["precision"][:, :, :, 0, 2]  # (T, R, K) area "all", maxDets 100
    per_class_t = np.where(precision > -1, precision, np.nan)
    ap = np.nanmean(per_class_t, axis=1)  # (T, K)
    return ap.T, ev.stats[1], ev.stats[0]  # (K, T), AP50, AP50:95


def _perturbed_predictions(ground_truth, seed: int):
    """A detector-like set: jittered true boxes (some relabelled), misses and false alarms."""
    rng = np.random.default_rng(seed)
    out = []
    for boxes, ids in ground_truth:
        keep = rng.random(len(boxes)) > 0.15
        b = boxes[keep] + rng.normal(0, 6, (keep.sum(), 4))
        c = ids[keep].copy()
        flip = rng.random(len(c)) < 0.05
        c[flip] = rng.integers(0, 3, flip.sum())
        fp = rng.integers(0, 6)
        xy = rng.uniform(0, 560, (fp, 2))
        b = np.concatenate([b, np.concatenate([xy, xy + rng.uniform(20, 120, (fp, 2))], 1)])
        c = np.concatenate([c, rng.integers(0, 3, fp)])
        s = np.round(rng.random(len(b)), 2)  # rounded: ties exercise the stable ordering
        out.append((b.astype(np.float32), s.astype(np.float32), c.astype(np.int32)))
    return out


def _bccd_ground_truth(bccd_dir, split, names=None):
    from fastcell.data.labels import read_voc

    labels = read_voc(bccd_dir, split)
    samples = labels.samples if names is None else [s for n in names for s in labels.samples if s.name == n]
    return [(s.boxes, s.class_ids) for s in samples], labels.classes


@pytest.mark.parametrize("seed", [0, 1])
def test_map_equals_pycocotools_on_perturbed_bccd_labels(bccd_dir, seed):
    gt, classes = _bccd_ground_truth(bccd_dir, "val")
    preds = _perturbed_predictions(gt, seed)
    ours = evaluate_detections(preds, gt, classes, score=0.25)
    ap_coco, map50, map5095 = _coco_map(preds, gt, len(classes))
    np.testing.assert_allclose(ours.ap, ap_coco, atol=1e-3)
    assert ours.map50 == pytest.approx(map50, abs=1e-3)
    assert ours.map50_95 == pytest.approx(map5095, abs=1e-3)


def test_map_equals_pycocotools_on_real_model_predictions(bccd_dir, default_model_json):
    """The shipped BCCD model's own detections on the BCCD test split, at the low mAP threshold."""
    from fastcell.evaluation.predict import open_annotator, predict_images

    gt, classes = _bccd_ground_truth(bccd_dir, "test")
    names = (bccd_dir / "ImageSets" / "Main" / "test.txt").read_text().split()
    with open_annotator(default_model_json, score=0.001) as annotator:
        preds = predict_images(annotator, [bccd_dir / "JPEGImages" / f"{n}.jpg" for n in names], progress=False)
    assert sum(len(p[0]) for p in preds) > 1000  # a real, long low-score tail
    ours = evaluate_detections(preds, gt, classes, score=0.25)
    ap_coco, map50, map5095 = _coco_map(preds, gt, len(classes))
    np.testing.assert_allclose(ours.ap, ap_coco, atol=1e-3)
    assert ours.map50 == pytest.approx(map50, abs=1e-3)
    assert ours.map50_95 == pytest.approx(map5095, abs=1e-3)


def test_perfect_and_empty_predictions():
    gt = [(np.array([[0, 0, 10, 10], [20, 20, 40, 40]], np.float32), np.array([0, 1]))]
    perfect = [(gt[0][0], np.array([0.9, 0.8], np.float32), np.array([0, 1], np.int32))]
    m = evaluate_detections(perfect, gt, ("a", "b"), score=0.25)
    assert m.map50 == 1.0 and m.map50_95 == 1.0
    np.testing.assert_array_equal(m.p, [1, 1])
    np.testing.assert_array_equal(m.r, [1, 1])
    empty = [(np.zeros((0, 4), np.float32), np.zeros(0, np.float32), np.zeros(0, np.int32))]
    assert evaluate_detections(empty, gt, ("a", "b"), score=0.25).map50 == 0.0


def test_precision_recall_f1_at_the_operating_threshold():
    gt = [(np.array([[0, 0, 10, 10], [20, 20, 40, 40], [50, 50, 60, 60]], np.float32), np.array([0, 0, 0]))]
    pred = [(np.array([[0, 0, 10, 10], [21, 21, 40, 40], [70, 70, 80, 80], [50, 50, 60, 60]], np.float32),
             np.array([0.9, 0.6, 0.5, 0.1], np.float32), np.array([0, 0, 0, 0], np.int32))]
    m = evaluate_detections(pred, gt, ("cell",), score=0.25)
    # at score >= 0.25: 2 true positives, 1 false alarm, 1 of 3 cells missed
    assert m.p[0] == pytest.approx(2 / 3) and m.r[0] == pytest.approx(2 / 3) and m.f1[0] == pytest.approx(2 / 3)
    thresholds, f1 = f1_curve(pred, gt, 1, [0.05, 0.25, 0.55, 0.95])
    # 0.05: all 4 kept, 3 TP → P 3/4, R 1 → 6/7; 0.55: 2 TP alone → P 1, R 2/3 → 4/5; 0.95: nothing
    np.testing.assert_allclose(f1[:, 0], [6 / 7, 2 / 3, 4 / 5, 0.0])
    assert best_score_threshold(pred, gt, 1)[0] == pytest.approx(0.05)


def test_confusion_matrix_by_hand():
    gt = [(np.array([[0, 0, 10, 10], [20, 20, 30, 30], [40, 40, 50, 50]], np.float32), np.array([0, 1, 1]))]
    pred = [(np.array([[0, 0, 10, 10], [20, 20, 30, 30], [80, 80, 90, 90]], np.float32),
             np.array([0.9, 0.8, 0.7], np.float32), np.array([0, 0, 1], np.int32))]
    cm = confusion_matrix(pred, gt, 2, score=0.25)
    expected = np.array([
        [1, 1, 0],  # predicted a: one true a, one true b (wrong class)
        [0, 0, 1],  # predicted b: a false alarm
        [0, 1, 0],  # missed: one b
    ])
    np.testing.assert_array_equal(cm, expected)


def test_table2_frame_rates_by_hand():
    cell = np.array([[10, 10, 50, 50]], np.float32)
    none = (np.zeros((0, 4), np.float32), np.zeros(0, np.float32), np.zeros(0, np.int32))

    def det(box, score=0.9):
        return (np.array([box], np.float32), np.array([score], np.float32), np.array([0], np.int32))

    predictions = [det([12, 12, 50, 50]), det([12, 12, 50, 50], 0.1), det([60, 60, 90, 90]), none,  # cell frames
                   det([0, 0, 5, 5]), none, none]  # noise frames
    ground_truth = [(cell, np.array([0]))] * 4 + [(np.zeros((0, 4), np.float32), np.zeros(0, np.int64))] * 3
    r = frame_rates(predictions, ground_truth, score=0.25)
    assert (r.cell_frames, r.noise_frames) == (4, 3)
    assert r.tp_rate == 0.25  # only the first frame finds its cell
    assert r.no_label_rate == 0.5  # the low-score and the empty frame
    assert r.mislocated_rate == 0.25
    assert r.fp_rate == pytest.approx(1 / 3) and r.tn_rate == pytest.approx(2 / 3)


def test_mask_iou_and_dice_by_hand():
    a = np.zeros((10, 10), bool)
    b = np.zeros((10, 10), bool)
    a[0:4, 0:4] = True  # 16 pixels
    b[2:6, 2:6] = True  # 16 pixels, 4 shared
    iou, dice = mask_iou_dice(a, b)
    assert iou == pytest.approx(4 / 28) and dice == pytest.approx(8 / 32)
    assert mask_iou_dice(a, a) == (1.0, 1.0)
    with pytest.raises(ValueError, match="shapes differ"):
        mask_iou_dice(a, b[:5])
