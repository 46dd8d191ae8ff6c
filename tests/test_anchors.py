"""K-means++ anchors (Algorithm 1) on synthetic box sizes with known clusters, and on BCCD."""

from __future__ import annotations

import numpy as np
import pytest

from fastcell.model.anchors import YOLOV3_TINY_COCO_ANCHORS, kmeans_anchors, mean_best_iou, scaled_box_sizes, wh_iou

CENTRES = np.array([[12, 10], [30, 34], [60, 45], [90, 100], [160, 140], [300, 260]], np.float64)


def _clusters(seed: int = 0, per: int = 200, spread: float = 0.04) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.concatenate([c * (1 + rng.normal(0, spread, (per, 2))) for c in CENTRES])


@pytest.mark.parametrize("metric", ["iou", "euclidean"])
@pytest.mark.parametrize("seed", [0, 1, 7])
def test_recovers_known_clusters_sorted_by_area(metric, seed):
    anchors = kmeans_anchors(_clusters(seed), 6, metric, seed=seed)
    assert anchors.shape == (6, 2) and anchors.dtype == np.float32
    assert np.all(np.diff(anchors.prod(1)) > 0)  # smallest first: 0-2 go to the 26×26 head
    np.testing.assert_allclose(anchors, CENTRES, rtol=0.03)


def test_deterministic_for_a_seed():
    wh = _clusters(3, spread=0.3)  # overlapping clusters: the seeding matters
    np.testing.assert_array_equal(kmeans_anchors(wh, seed=5), kmeans_anchors(wh, seed=5))


def test_wh_iou_by_hand():
    # 4×2 vs 2×4 on one centre: intersection 2×2 = 4, union 8 + 8 - 4 = 12.
    assert wh_iou(np.array([[4, 2]]), np.array([[2, 4]]))[0, 0] == pytest.approx(4 / 12)
    assert wh_iou(np.array([[5, 5]]), np.array([[5, 5]]))[0, 0] == pytest.approx(1.0)


def test_mean_best_iou_of_exact_anchors_is_one():
    assert mean_best_iou(CENTRES, CENTRES) == pytest.approx(1.0)


def test_bad_input_is_refused():
    with pytest.raises(ValueError, match="at least k=6"):
        kmeans_anchors(np.ones((5, 2)))
    with pytest.raises(ValueError, match="> 0"):
        kmeans_anchors(np.array([[1, 1]] * 5 + [[0, 3]]))
    with pytest.raises(ValueError, match="metric"):
        kmeans_anchors(_clusters(), metric="manhattan")


def test_bccd_anchors_fit_better_than_stock_coco_anchors(bccd_dir):
    # The paper's Figure 7 point: data-specific anchors match the cells far better.
    from fastcell.data.labels import read_voc

    wh = scaled_box_sizes(read_voc(bccd_dir, "train"), 416)
    anchors = kmeans_anchors(wh, seed=0)
    ours, coco = mean_best_iou(wh, anchors), mean_best_iou(wh, YOLOV3_TINY_COCO_ANCHORS)
    assert ours > 0.8 and ours > coco + 0.1
    # every anchor is the mean of some boxes, so it lies within the range of the data
    assert np.all(anchors >= wh.min(0)) and np.all(anchors <= wh.max(0))
