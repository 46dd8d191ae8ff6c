"""Speed of the compiled post-processing kernels beside their NumPy/OpenCV references, in one run.

Same inputs for both sides, one core (BLAS/OpenMP/OpenCV threads set to 1), median of many repeats.

(a) sparse: a 640×480 frame letterboxed to 416×416 with ~10 cells seen as 60 candidates —
    decode + NMS + GBCIOU (``postprocess``); when the image kernels are present, also
    ``segment_cells`` on the 640×480 frame and ``letterbox`` of it (rows appear automatically);
(b) dense: 1,000 candidates — greedy NMS alone, and the whole postprocess of a frame that decodes
    to ~1,000 candidates.

Each row prints the reference time, the C++ time and the ratio reference / C++; the last line is the
sparse-case ratio. Usage: ``python benchmarks/bench_postprocess.py [--repeats 300]``.
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import statistics  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

from fastcell import ops  # noqa: E402
from fastcell import reference as ref  # noqa: E402
from fastcell.reference.boxes import encode_heads  # noqa: E402
from fastcell.spec import HEAD_ANCHORS  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
NUM_CLASSES = 3
ANCHORS6 = np.array([[10, 14], [23, 27], [37, 58], [81, 82], [135, 169], [344, 319]], np.float32)
STRIDES = [32, 16]
ANCHORS = [ANCHORS6[list(HEAD_ANCHORS[s])] for s in STRIDES]
SHAPES = [(13, 13), (26, 26)]
KW = dict(strides=STRIDES, anchors=ANCHORS, num_classes=NUM_CLASSES)
FRAME_W, FRAME_H, SIZE = 640, 480, 416


def median_seconds(fn, repeats: int, number: int) -> float:
    """Median over `repeats` of the mean time of `number` back-to-back calls."""
    fn()  # warm up (first-call allocations, lazy imports)
    times = []
    for _ in range(repeats):
        start = time.perf_counter_ns()
        for _ in range(number):
            fn()
        times.append((time.perf_counter_ns() - start) / number)
    return statistics.median(times) / 1e9


def letterbox_params() -> np.ndarray:
    scale = min(SIZE / FRAME_W, SIZE / FRAME_H)
    new_w, new_h = round(FRAME_W * scale), round(FRAME_H * scale)
    return np.array([[scale, (SIZE - new_w) // 2, (SIZE - new_h) // 2, FRAME_W, FRAME_H]], np.float32)


def sparse_heads(rng: np.random.Generator, cells: int = 10, per_cell: int = 6) -> list[np.ndarray]:
    """Heads of a frame with `cells` cells, each predicted by all 6 (head, anchor) slots with jitter,
    over a background of low objectness noise (as a trained model's output looks)."""
    centre = rng.uniform(60, 356, (cells, 2))
    centre[:, 1] = rng.uniform(100, 316, cells)  # inside the image part of the letterboxed input
    size = rng.uniform(30, 70, (cells, 2))
    c = np.repeat(centre, per_cell, axis=0) + rng.normal(0, 2, (cells * per_cell, 2))
    s = np.repeat(size, per_cell, axis=0) * rng.uniform(0.9, 1.1, (cells * per_cell, 2))
    image = dict(boxes=np.concatenate([c - s / 2, c + s / 2], 1), class_ids=rng.integers(0, NUM_CLASSES, cells * per_cell),
                 objectness=rng.uniform(0.5, 4, cells * per_cell), head=np.tile(np.repeat([0, 1], 3), cells),
                 anchor=np.tile([0, 1, 2], 2 * cells))
    heads = encode_heads([image], shapes=SHAPES, **KW)
    for head in heads:  # background noise everywhere else
        empty = head == 0
        head[empty] = rng.normal(0, 1, int(empty.sum())).astype(np.float32)
    return heads


def dense_heads(rng: np.random.Generator, target: int = 1000) -> list[np.ndarray]:
    """Heads whose objectness is high enough that ~`target` candidates pass a 0.25 score threshold."""
    heads = [rng.normal(0, 1, (1, 3 * (NUM_CLASSES + 5), h, w)).astype(np.float32) for h, w in SHAPES]
    for head in heads:
        head[:, 2::NUM_CLASSES + 5] = rng.normal(-0.5, 0.3, head[:, 2::NUM_CLASSES + 5].shape)  # cell-sized boxes
        head[:, 3::NUM_CLASSES + 5] = rng.normal(-0.5, 0.3, head[:, 3::NUM_CLASSES + 5].shape)
    lo, hi = -10.0, 10.0  # bisect the objectness offset
    base = [h[:, 4::NUM_CLASSES + 5].copy() for h in heads]
    for _ in range(40):
        mid = (lo + hi) / 2
        for h, b in zip(heads, base):
            h[:, 4::NUM_CLASSES + 5] = b + mid
        n = len(ops.decode(heads, STRIDES, ANCHORS, NUM_CLASSES, 0.25)[0][0])
        lo, hi = (mid, hi) if n < target else (lo, mid)
    return heads


def frame_image(rng: np.random.Generator) -> np.ndarray:
    samples = sorted((REPO / "tests" / "data" / "bccd").glob("*.jpg"))
    if samples:
        import cv2

        image = cv2.imread(str(samples[0]), cv2.IMREAD_COLOR)
        if image is not None and image.shape[:2] == (FRAME_H, FRAME_W):
            return image
    return rng.integers(0, 256, (FRAME_H, FRAME_W, 3), dtype=np.uint8)


def row(name: str, reference_s: float, fast_s: float) -> float:
    ratio = reference_s / fast_s
    print(f"{name:<52} reference {reference_s * 1e3:9.3f} ms   C++ {fast_s * 1e3:8.4f} ms   ×{ratio:7.1f}")
    return ratio


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=300, help="timed repeats of the C++ side (median)")
    args = parser.parse_args()
    try:
        import cv2

        cv2.setNumThreads(1)
    except ImportError:  # pragma: no cover - opencv is a dependency
        pass
    rng = np.random.default_rng(0)
    fast_r, ref_r = args.repeats, max(args.repeats // 10, 15)
    params = letterbox_params()

    # (a) sparse frame
    heads = sparse_heads(rng)
    candidates = len(ops.decode(heads, STRIDES, ANCHORS, NUM_CLASSES, 0.25)[0][0])
    boxes, scores, _ = ops.postprocess(heads, params, **KW)[0]
    print(f"(a) sparse: 416×416 input of a {FRAME_W}×{FRAME_H} frame, {candidates} candidates → {len(boxes)} boxes, one core")
    t_ref = median_seconds(lambda: ref.postprocess(heads, params, **KW), ref_r, 5)
    t_fast = median_seconds(lambda: ops.postprocess(heads, params, **KW), fast_r, 20)
    sparse_ref, sparse_fast = t_ref, t_fast
    row("postprocess: decode + NMS + GBCIOU + map back", t_ref, t_fast)
    sparse_name = "decode + NMS + GBCIOU"
    image = frame_image(rng)
    if hasattr(ops, "segment_cells") and hasattr(ref, "segment_cells"):
        seg = dict(hsv_low=(0, 20, 0), hsv_high=(179, 255, 255))
        t_ref = median_seconds(lambda: ref.segment_cells(image, boxes, scores, **seg), ref_r, 2)
        t_fast = median_seconds(lambda: ops.segment_cells(image, boxes, scores, **seg), fast_r, 5)
        row(f"segment_cells: circle ∩ HSV, {len(boxes)} boxes, {FRAME_W}×{FRAME_H}", t_ref, t_fast)
        sparse_ref, sparse_fast = sparse_ref + t_ref, sparse_fast + t_fast
        sparse_name += " + circle/HSV segmentation"
        row(f"sparse total: {sparse_name}", sparse_ref, sparse_fast)
    if hasattr(ops, "letterbox") and hasattr(ref, "letterbox"):
        t_ref = median_seconds(lambda: ref.letterbox(image, SIZE), ref_r, 5)
        t_fast = median_seconds(lambda: ops.letterbox(image, SIZE), fast_r, 5)
        row(f"letterbox {FRAME_W}×{FRAME_H} → 3×{SIZE}×{SIZE} float32", t_ref, t_fast)

    # (b) dense
    centres = rng.uniform(20, 396, (100, 2))
    sizes = rng.uniform(15, 60, (100, 2))
    c = np.repeat(centres, 10, axis=0) + rng.normal(0, 3, (1000, 2))
    s = np.repeat(sizes, 10, axis=0) * rng.uniform(0.85, 1.15, (1000, 2))
    dense_boxes = np.concatenate([c - s / 2, c + s / 2], 1).astype(np.float32)
    dense_scores = rng.random(1000).astype(np.float32)
    dense_ids = rng.integers(0, NUM_CLASSES, 1000).astype(np.int32)
    kept = len(ops.nms(dense_boxes, dense_scores, 0.45, dense_ids))
    print(f"(b) dense: 1,000 candidates (100 clusters × 10, 3 classes) → NMS keeps {kept}")
    t_ref = median_seconds(lambda: ref.nms(dense_boxes, dense_scores, 0.45, dense_ids), ref_r, 1)
    t_fast = median_seconds(lambda: ops.nms(dense_boxes, dense_scores, 0.45, dense_ids), fast_r, 5)
    row("greedy NMS, 1,000 candidates", t_ref, t_fast)
    heads = dense_heads(rng)
    candidates = len(ops.decode(heads, STRIDES, ANCHORS, NUM_CLASSES, 0.25)[0][0])
    t_ref = median_seconds(lambda: ref.postprocess(heads, params, **KW), max(ref_r // 3, 5), 1)
    t_fast = median_seconds(lambda: ops.postprocess(heads, params, **KW), fast_r, 2)
    row(f"postprocess of a frame with {candidates} candidates", t_ref, t_fast)

    print(f"sparse-case ratio ({sparse_name}) reference / C++: ×{sparse_ref / sparse_fast:.1f} "
          f"({sparse_ref * 1e3:.3f} ms vs {sparse_fast * 1e3:.4f} ms)")


if __name__ == "__main__":
    main()
