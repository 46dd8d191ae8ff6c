"""The CPU kernels' instruction-set twins (AVX-512, AVX2, portable C++) give the same answer.

The core picks the best twin the CPU runs; ``_core.set_simd_limit`` caps that, so one machine runs
them all. Each lower twin must equal the reference (as the top one is tested to in
test_ops_image.py) and the top twin bit for bit. Levels this CPU lacks are skipped with the reason.
"""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from fastcell import _core, ops
from fastcell.reference import image as ref

LEVELS = ("avx512", "avx2", "portable")
RANK = {name: rank for rank, name in enumerate(reversed(LEVELS))}


@pytest.fixture(params=LEVELS)
def level(request):
    """Run the test body with the kernels capped at one level; the cap is lifted afterwards."""
    name = request.param
    if RANK[name] > RANK[_core.cpu_simd()]:
        pytest.skip(f"this CPU runs up to {_core.cpu_simd()}, not {name}")
    _core.set_simd_limit(name)
    try:
        assert _core.simd() == name
        yield name
    finally:
        _core.set_simd_limit("avx512")


def at_top(fn, *args, **kwargs):
    """fn at the best level this CPU runs, whatever the current cap."""
    current = _core.simd()
    _core.set_simd_limit("avx512")
    try:
        return fn(*args, **kwargs)
    finally:
        _core.set_simd_limit(current)


def random_boxes(rng: np.random.Generator, count: int, height: int, width: int, small: bool = False) -> np.ndarray:
    centres = rng.uniform([-20, -20], [width + 20, height + 20], size=(count, 2))
    sizes = rng.uniform(0.5, 12, size=(count, 2)) if small else rng.uniform(20, 160, size=(count, 2))
    return np.hstack([centres - sizes / 2, centres + sizes / 2]).astype(np.float32)


SEGMENT_RANGES = [
    (None, None),
    ((0, 10, 0), (179, 255, 255)),  # the shipped default: S only
    ((0, 0, 0), (179, 255, 220)),  # V only
    ((0, 37, 20), (179, 201, 240)),  # S and V, both ends
    ((150, 20, 0), (20, 255, 255)),  # hue wrapping through 0
    ((35, 0, 0), (95, 90, 255)),  # hue and an upper S bound
]


def test_limit_is_checked_and_lifted():
    with pytest.raises(ValueError, match="'avx512', 'avx2' or 'portable'"):
        _core.set_simd_limit("sse4")
    _core.set_simd_limit("portable")
    assert _core.simd() == "portable"
    _core.set_simd_limit("avx512")
    assert _core.simd() == _core.cpu_simd()


@pytest.mark.parametrize("disc", ["circle", "ellipse"])
@pytest.mark.parametrize("hsv", SEGMENT_RANGES)
def test_segment_twins_equal_reference_on_random_frames(level, disc, hsv):
    rng = np.random.default_rng(RANK[level] * 100 + len(str(hsv)))
    for height, width, count, small in ((240, 320, 14, False), (37, 61, 25, True), (1, 200, 3, False)):
        image = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
        boxes = random_boxes(rng, count, height, width, small)
        boxes[0] = [5, 5, 5, 40]  # zero width: an empty mask
        scores = rng.random(count).astype(np.float32)
        scores[1] = scores[2]  # a tie: the lower index wins
        labels, segmented = ops.segment_cells(image, boxes, scores, *hsv, disc=disc, fill=(7, 8, 9))
        want_labels, want_segmented = ref.segment_cells(image, boxes, scores, *hsv, disc=disc, fill=(7, 8, 9),
                                                        draw="exact")
        np.testing.assert_array_equal(labels, want_labels)
        np.testing.assert_array_equal(segmented, want_segmented)
        top = at_top(ops.segment_cells, image, boxes, scores, *hsv, disc=disc, fill=(7, 8, 9))
        np.testing.assert_array_equal(labels, top[0])
        np.testing.assert_array_equal(segmented, top[1])


@pytest.mark.parametrize("disc", ["circle", "ellipse"])
def test_segment_twins_equal_reference_on_tall_discs(level, disc):
    # Discs spanning 255..521 rows: the AVX-512 spans go 8 rows at a time, and a lane mask once
    # wrapped at 256 rows, leaving rows uncorrected (integer boxes of odd width showed it).
    image = np.full((600, 300, 3), 200, np.uint8)
    boxes = np.array([[40, 10, 61, 264], [10, 10, 265, 264], [100, 5, 151, 262], [5, 20, 290, 276],
                      [120, 3, 171, 524], [60, 30, 83, 553]], np.float32)
    for box in boxes:
        labels, _ = ops.segment_cells(image, box[None], [1.0], disc=disc)
        want, _ = ref.segment_cells(image, box[None], [1.0], disc=disc, draw="exact")
        np.testing.assert_array_equal(labels, want, err_msg=str(box))


def test_segment_twins_equal_on_real_bccd_frames(level, bccd_images):
    rng = np.random.default_rng(3)
    for path in bccd_images:
        image = cv2.imread(str(path))
        boxes = random_boxes(rng, 15, *image.shape[:2])
        scores = rng.random(15).astype(np.float32)
        for hsv in SEGMENT_RANGES:
            got = ops.segment_cells(image, boxes, scores, *hsv, disc="ellipse")
            want = at_top(ops.segment_cells, image, boxes, scores, *hsv, disc="ellipse")
            np.testing.assert_array_equal(got[0], want[0], err_msg=f"{path.name} {hsv}")
            np.testing.assert_array_equal(got[1], want[1], err_msg=f"{path.name} {hsv}")


def test_saturation_bounds_equal_cvtcolor_for_every_value_and_spread(level):
    # The AVX-512 twin tests S through per-V bounds on max - min: every (V, max - min) pair, against
    # cv2, for every lower bound and every upper bound of S.
    v, spread = np.meshgrid(np.arange(256), np.arange(256), indexing="ij")
    spread = np.minimum(spread, v)
    image = np.stack([v, v - spread, v - spread // 2], axis=-1).astype(np.uint8)  # B max, G min
    cover = np.array([[-1e4, -1e4, 2e4, 2e4]], np.float32)  # a disc holding the whole frame
    for bound in range(256):
        for low, high in (((0, bound, 0), (179, 255, 255)), ((0, 0, 0), (179, bound, 255))):
            labels, _ = ops.segment_cells(image, cover, [1.0], low, high)
            np.testing.assert_array_equal(labels > 0, ref.hsv_mask(image, low, high), err_msg=f"{low}..{high}")


@pytest.mark.parametrize("shape", [(480, 640, 3), (333, 517, 3), (517, 333, 3), (120, 120, 3), (2, 3, 3),
                                   (3000, 4000, 3), (480, 640), (480, 640, 4)])
def test_letterbox_twins_equal_bit_for_bit(level, shape):
    image = np.random.default_rng(len(shape) + shape[0]).integers(0, 256, shape, dtype=np.uint8)
    chw, params = ops.letterbox(image, 416)
    want, want_params = ref.letterbox(image, 416)
    assert np.abs(chw - want).max() <= 1 / 255
    top, top_params = at_top(ops.letterbox, image, 416)
    np.testing.assert_array_equal(chw, top)
    np.testing.assert_array_equal(params, top_params)


def random_heads(rng: np.random.Generator, batch: int = 2, classes: int = 3) -> list[np.ndarray]:
    """Two YOLO heads of noise with some confident cells (odd plane sizes leave partial scan blocks)."""
    heads = []
    for size in (13, 27):
        head = rng.normal(0, 2, (batch, 3 * (classes + 5), size, size)).astype(np.float32)
        objectness = head[:, 4 :: classes + 5]
        objectness[rng.random(objectness.shape) < 0.05] = 4.0  # ~5 % of the cells are cells
        heads.append(head)
    return heads


STRIDES = [32, 16]
ANCHORS = [np.array([[81, 82], [135, 169], [344, 319]], np.float32),
           np.array([[10, 14], [23, 27], [37, 58]], np.float32)]


@pytest.mark.parametrize("threshold", [0.0, 0.25, 0.9])
def test_decode_twins_equal_bit_for_bit(level, threshold):
    heads = random_heads(np.random.default_rng(int(threshold * 100)))
    got = ops.decode(heads, STRIDES, ANCHORS, 3, threshold)
    want = at_top(ops.decode, heads, STRIDES, ANCHORS, 3, threshold)
    assert sum(len(d[0]) for d in got) > 0
    for (boxes, scores, ids), (want_boxes, want_scores, want_ids) in zip(got, want):
        np.testing.assert_array_equal(boxes, want_boxes)
        np.testing.assert_array_equal(scores, want_scores)
        np.testing.assert_array_equal(ids, want_ids)


@pytest.mark.parametrize("where", [0, 7, 17, -1])  # first value, inside a block, a block's tail, last value
def test_decode_twins_find_the_same_non_finite_value(level, where):
    heads = random_heads(np.random.default_rng(5), batch=1)
    flat = heads[1].reshape(-1)
    flat[where] = np.inf if where % 2 else np.nan
    with pytest.raises(ValueError, match="heads\\[1\\] contains NaN or infinity") as error:
        ops.decode(heads, STRIDES, ANCHORS, 3, 0.25)
    with pytest.raises(ValueError) as top_error:
        at_top(ops.decode, heads, STRIDES, ANCHORS, 3, 0.25)
    assert str(error.value) == str(top_error.value)


def test_coco_rle_twins_equal_the_numpy_encoding(level):
    from fastcell.io.writers._rle import compress_many, instance_counts

    rng = np.random.default_rng(RANK[level])
    for height, width in ((1, 1), (1, 40), (40, 1), (17, 33), (64, 70), (3, 100)):
        for _ in range(10):
            n = int(rng.integers(0, 5))
            labels = np.where(rng.random((height, width)) < 0.6, 0, rng.integers(1, n + 2, (height, width)))
            labels = labels.astype(np.int32)
            strings, areas = ops.coco_rle(labels, n)
            reference = instance_counts(labels, n)
            assert strings == compress_many([counts for counts, _ in reference])
            assert areas.tolist() == [area for _, area in reference]
