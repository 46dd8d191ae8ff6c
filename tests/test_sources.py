"""Other labs' data sets: readers, the point → box rule, splits, packing, and the masked loss."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from fastcell.data.augment import Augment, augment_sample, single_cell_crop
from fastcell.data.photometric import camera, hed_jitter, white_balance_gamma
from fastcell.data.sources import (CLASSES, load_source, pack_sources, points_to_boxes, read_packed,
                                   split_of)

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


def _iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    lt, rb = np.maximum(a[:, :2], b[:, :2]), np.minimum(a[:, 2:], b[:, 2:])
    inter = np.prod((rb - lt).clip(0), 1)
    return inter / (np.prod(a[:, 2:] - a[:, :2], 1) + np.prod(b[:, 2:] - b[:, :2], 1) - inter)


def need(name: str) -> Path:
    path = DATA / name
    if not path.is_dir():
        pytest.skip(f"{path} is absent (see ../shared/data/README.md)")
    return path


# -- splits ----------------------------------------------------------------------------------------
def test_split_is_a_pure_function_of_the_name_with_the_documented_shares():
    names = [f"image-{i}.png" for i in range(4000)]
    splits = [split_of(n) for n in names]
    assert splits == [split_of(n) for n in reversed(names)][::-1]  # order never matters
    share = {s: splits.count(s) / len(names) for s in ("train", "val", "test")}
    assert abs(share["test"] - 0.15) < 0.02 and abs(share["val"] - 0.10) < 0.02
    assert split_of("a/b/\udcff.jpg") in ("train", "val", "test")  # undecodable names work too


# -- points → boxes --------------------------------------------------------------------------------
def _discs(centres, radius, size=(240, 320)):
    image = np.full((*size, 3), (230, 220, 235), np.uint8)  # pale, unsaturated background
    for x, y in centres:
        cv2.circle(image, (x, y), radius, (150, 110, 200), -1)  # saturated pink cells
    return image


def test_separate_cells_get_their_own_blob_box():
    centres = [(40, 40), (120, 60), (200, 50), (60, 150), (160, 170), (270, 180)]
    image = _discs(centres, 15)
    boxes = points_to_boxes(image, np.array(centres, np.float32))
    truth = np.array([(x - 15, y - 15, x + 16, y + 16) for x, y in centres], np.float32)  # cv2's disc spans 31 px
    assert np.abs(boxes - truth).max() <= 1.0


def test_touching_cells_get_a_square_of_the_typical_size():
    separate = [(40, 40), (120, 40), (200, 40), (280, 40)]
    touching = [(60, 160), (89, 160)]  # overlapping discs: one blob holding two points
    image = _discs(separate + touching, 15)
    boxes = points_to_boxes(image, np.array(separate + touching, np.float32))
    side = boxes[4:, 2] - boxes[4:, 0]
    single = np.maximum(boxes[:4, 2] - boxes[:4, 0], boxes[:4, 3] - boxes[:4, 1])
    assert np.allclose(single, 31, atol=2)  # the separate cells: their own blobs
    assert np.allclose(side, np.median(single))  # the touching ones: the median of those
    centre = (boxes[4:, :2] + boxes[4:, 2:]) / 2
    assert np.allclose(centre, touching, atol=0.5)


def test_points_to_boxes_on_bccd_red_cells_matches_the_documented_error():
    root = need("bccd")
    labels = load_source(root, "test")
    rbc = CLASSES.index("RBC")
    ious = []
    for sample in labels.samples:
        truth = sample.boxes[sample.class_ids == rbc]
        if len(truth) < 2:
            continue
        centres = (truth[:, :2] + truth[:, 2:]) / 2
        boxes = points_to_boxes(cv2.imread(str(sample.image)), centres)
        ious.append(np.nan_to_num(_iou(boxes, truth)))
    ious = np.concatenate(ious)
    assert 0.66 <= ious.mean() <= 0.74  # documented: 0.70
    assert (ious >= 0.5).mean() >= 0.80  # documented: 84 %


# -- readers on the real sets ------------------------------------------------------------------------
def test_readers_find_every_label_of_the_other_labs():
    counts = {}
    for name in ("chula-rbc12", "bcdd", "pig-wbc"):
        root = need(name)
        per_class = np.zeros(len(CLASSES), np.int64)
        for split in ("train", "val", "test"):
            labels = load_source(root, split)
            assert labels.classes == CLASSES
            for sample in labels.samples:
                assert sample.source == name
                per_class += np.bincount(sample.class_ids, minlength=len(CLASSES))
                unlabelled = [c for c, known in zip(CLASSES, sample.labelled) if not known]
                assert not np.isin(sample.class_ids, [CLASSES.index(c) for c in unlabelled]).any()
        counts[name] = dict(zip(CLASSES, per_class.tolist()))
    # the data README's counts: BCDD rbc 2,236 / wbc 103; pig 875 + 188 + 180; Chula 22,106 points
    assert counts["bcdd"] == {"WBC": 103, "RBC": 2236, "Platelets": 0}
    assert counts["pig-wbc"] == {"WBC": 875 + 188 + 180, "RBC": 0, "Platelets": 0}
    assert counts["chula-rbc12"]["RBC"] == 22106 and counts["chula-rbc12"]["WBC"] == 0


def test_pack_round_trip_keeps_boxes_in_the_resized_frame(tmp_path):
    root = need("bcdd")
    pack_sources([root], tmp_path / "pack", splits=("val",), max_side=128)
    original = load_source(root, "val")
    packed = read_packed(tmp_path / "pack", "val")
    assert len(packed) == len(original)
    for a, b in zip(original.samples, packed.samples):
        assert (b.width, b.height) == (128, 128) and a.width == 256  # BCDD is 256×256
        assert np.allclose(b.boxes * 2, a.boxes, atol=0.02)
        assert b.labelled == a.labelled and b.source == "bcdd"
        assert cv2.imread(str(b.image)).shape == (128, 128, 3)


# -- augmentations ----------------------------------------------------------------------------------
def test_photometric_augmentations_are_off_at_zero_and_replayable():
    image = np.random.default_rng(0).integers(0, 256, (64, 80, 3), dtype=np.uint8)
    rng = np.random.default_rng(1)
    assert hed_jitter(image, 0.0, rng) is image
    assert white_balance_gamma(image, 0.0, 0.0, rng) is image
    assert camera(image, 0.0, 0.0, 0.0, rng) is image
    a = hed_jitter(image, 0.1, np.random.default_rng(5))
    b = hed_jitter(image, 0.1, np.random.default_rng(5))
    assert a.shape == image.shape and a.dtype == np.uint8 and np.array_equal(a, b)
    assert not np.array_equal(a, image)


def test_white_balance_gains_follow_the_drawn_values():
    image = np.full((4, 4, 3), 100, np.uint8)
    rng = np.random.default_rng(3)
    gains = np.random.default_rng(3).uniform(0.8, 1.2, 3)
    out = white_balance_gamma(image, 0.2, 0.0, rng)
    assert np.allclose(out[0, 0], np.floor(np.clip(100 / 255 * gains, 0, 1) * 255), atol=1)


def test_single_cell_crop_holds_the_cell_it_is_centred_on():
    rng = np.random.default_rng(0)
    image = np.zeros((400, 500, 3), np.uint8)
    boxes = np.array([[200, 150, 260, 210], [10, 10, 30, 30]], np.float32)
    ids = np.array([0, 1])
    for _ in range(50):
        image_c, b, c = single_cell_crop(image, boxes, ids, rng, prefer=0)
        h, w = image_c.shape[:2]
        inside = (b[:, 0] >= 0) & (b[:, 1] >= 0) & (b[:, 2] <= w) & (b[:, 3] <= h)
        assert inside.any()  # the chosen cell lies wholly in its crop (jitter ≤ 15 % of the side)
        assert 1.3 * 20 - 1 <= max(h, w) <= 3.0 * 60 + 1


def test_zoom_keeps_the_median_cell_in_range():
    image = np.full((416, 416, 3), 200, np.uint8)
    boxes = np.array([[100, 100, 108, 108], [200, 200, 208, 208]], np.float32)  # 8 px cells
    aug = Augment(mosaic=0, translate=0, flip_lr=0, flip_ud=0, rot90=False, hsv_h=0, hsv_s=0, hsv_v=0,
                  zoom=(0.4, 0.5), cell_range=(10.0, 360.0), min_visible=0.0)
    _, out, _ = augment_sample(image, boxes, np.array([1, 1]), 416, aug, np.random.default_rng(0))
    assert np.allclose(out[:, 2] - out[:, 0], 8, atol=0.01)  # never shrunk below 10 px: left as is


# -- the masked loss ---------------------------------------------------------------------------------
def test_unlabelled_class_predictions_get_no_background_loss():
    torch = pytest.importorskip("torch")
    from fastcell.model.loss import YoloLoss

    anchors = np.array([[10, 14], [23, 27], [37, 58], [81, 82], [135, 169], [344, 319]], np.float32)
    loss = YoloLoss(anchors, 3)
    torch.manual_seed(0)
    outputs = [torch.randn(1, 3 * 8, 13, 13) * 0.1 - 4, torch.randn(1, 3 * 8, 26, 26) * 0.1 - 4]
    targets = torch.tensor([[0, 1, 100.0, 100.0, 160.0, 160.0]])  # one RBC
    # a confident "platelet" on the 26×26 head far from the RBC: anchor 0, cell (20, 20)
    outputs[1][0, 4, 20, 20] = 3.0
    outputs[1][0, 5 + 2, 20, 20] = 4.0
    only_rbc = torch.tensor([[False, True, False]])
    everything = torch.tensor([[True, True, True]])

    def total(obj_logit, labelled):
        out = [o.clone() for o in outputs]
        out[1][0, 4, 20, 20] = obj_logit
        return float(loss(out, targets, labelled)[0])

    # all classes labelled: the same loss as without a mask, and the platelet is punished
    assert total(3.0, everything) == total(3.0, None)
    assert total(5.0, None) > total(3.0, None)
    # platelets unlabelled: that prediction is neither background nor cell
    assert total(5.0, only_rbc) == pytest.approx(total(3.0, only_rbc), abs=1e-7)
    # ... but a low-objectness prediction is still taught as background
    assert total(-2.5, only_rbc) > total(-3.0, only_rbc)  # σ(−2.5) = 0.08 < unlabelled_obj
