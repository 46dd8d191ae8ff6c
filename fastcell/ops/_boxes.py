"""Box kernels: pairwise IoU, YOLO decoding, NMS, GBCIOU merging and the one-call postprocess.

Thin numpy-in numpy-out wrappers over ``fastcell._core``; the compiled functions validate their
arrays, so the docstrings here carry the contract. Boxes are corner boxes ``(x1, y1, x2, y2)`` in
pixels, x to the right, y down; a box with ``x2 <= x1`` or ``y2 <= y1`` is empty (area 0) and
overlaps nothing. Non-float32, non-contiguous and negative-stride inputs are accepted and copied;
inputs are never modified. Plain NumPy twins live in :mod:`fastcell.reference.boxes`.

Box coordinates must lie within ±2**62 pixels (:data:`MAX_COORDINATE`): there every width, area and
sum of areas of the float32 geometry is finite, so an IoU is always in [0, 1] (a side of 2e19 pixels
would already overflow ``w·h``). Larger coordinates are refused with a ValueError, and :func:`decode`
refuses anchors and strides that would produce them.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from fastcell import defaults
from fastcell._core_loader import core as _core

__all__ = ["box_iou", "decode", "nms", "gbciou_merge", "postprocess", "MAX_COORDINATE", "MAX_ANCHOR", "MAX_CLASSES"]

# The limits live in the C++ core (types.hpp, decode.hpp); these are its values.
#: The largest box coordinate magnitude the box kernels accept, in pixels (2**62).
MAX_COORDINATE: float = _core.MAX_COORDINATE
#: The largest anchor side :func:`decode` accepts, in pixels (2**56): a box is at most 62.5 × its anchor.
MAX_ANCHOR: float = _core.MAX_ANCHOR
#: The largest ``num_classes`` (the class channel index must fit a 32-bit int): 2**31 - 6.
MAX_CLASSES: int = _core.MAX_CLASSES

Detections = tuple[np.ndarray, np.ndarray, np.ndarray]


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Intersection over union of every box of ``a`` with every box of ``b``.

    Parameters
    ----------
    a : (N, 4) array_like of float32
        Corner boxes ``(x1, y1, x2, y2)``.
    b : (M, 4) array_like of float32
        Corner boxes ``(x1, y1, x2, y2)``.

    Returns
    -------
    (N, M) ndarray of float32
        ``IoU[i, j] = I / (area(a[i]) + area(b[j]) - I)``, in [0, 1], computed in float32; 0 when
        both boxes are empty. Symmetric: ``box_iou(b, a) == box_iou(a, b).T``.

    Raises
    ------
    TypeError
        A non-numeric array.
    ValueError
        A shape other than (N, 4), or a NaN/inf coordinate or one past ±:data:`MAX_COORDINATE`.
    """
    return _core.box_iou(a, b)


def decode(
    heads: Sequence[np.ndarray],
    strides: Sequence[float],
    anchors: Sequence[np.ndarray],
    num_classes: int,
    score_threshold: float,
) -> list[Detections]:
    """Decode raw YOLOv3 head outputs into scored candidate boxes.

    Parameters
    ----------
    heads : list of (N, A·(C+5), H, W) ndarray of float32
        One array per head, all with the same batch size N. Channel ``a·(C+5) + k`` of anchor ``a``
        holds ``[tx, ty, tw, th, obj, cls_0 … cls_{C-1}][k]`` (the YOLOv3 layout).
    strides : list of float
        Network-input pixels per cell of each head (32 for 13×13, 16 for 26×26 at 416×416).
    anchors : list of (A, 2) ndarray of float32
        Anchor ``(width, height)`` in network-input pixels for each head, in ``(0, MAX_ANCHOR]``; with
        ``stride · max(H, W) <= MAX_COORDINATE / 2`` every decoded box lies within ±``MAX_COORDINATE``.
    num_classes : int
        ``1 <= C <= MAX_CLASSES``.
    score_threshold : float
        A candidate is kept when ``score >= score_threshold``.

    Returns
    -------
    list of (boxes, scores, class_ids), one per image
        boxes : (K, 4) ndarray of float32, ``(x1, y1, x2, y2)`` in network-input pixels, where
        ``cx = (sigmoid(tx) + gx)·stride``, ``w = exp(min(tw, log(1000/16)))·anchor_w`` (likewise y, h)
        and the box is ``centre ± size/2``. scores : (K,) ndarray of float32,
        ``sigmoid(obj)·sigmoid(best class logit)`` (computed in float64). class_ids : (K,) ndarray of
        int32, the arg-max class logit (the lowest class on ties). Candidates come head by head,
        anchor by anchor, then cell by cell row-major. No candidate: ``(0, 4)``, ``(0,)``, ``(0,)``.

    Raises
    ------
    ValueError
        NaN or infinity anywhere in a head (a broken model), shapes that disagree (batch sizes,
        channels != A·(C+5), list lengths), ``num_classes`` out of range, a stride or anchor that is
        not positive or is past the bounds above, a non-finite threshold.
    TypeError
        A non-numeric array or a head list that is not a sequence.
    """
    return _core.decode(heads, strides, anchors, int(num_classes), float(score_threshold))


def nms(boxes: np.ndarray, scores: np.ndarray, iou_threshold: float, class_ids: np.ndarray | None = None) -> np.ndarray:
    """Greedy non-maximum suppression.

    Candidates are visited by score, highest first, equal scores by index, lowest first. A visited
    candidate that no kept box has suppressed is kept, and suppresses every later candidate whose IoU
    with it (float32, as :func:`box_iou`) is strictly greater than ``iou_threshold`` — only those of
    its own class when ``class_ids`` is given, any class otherwise.

    Parameters
    ----------
    boxes : (N, 4) array_like of float32
        Corner boxes ``(x1, y1, x2, y2)``, within ±:data:`MAX_COORDINATE`.
    scores : (N,) array_like of float32
        Finite scores.
    iou_threshold : float
        IoU ``> iou_threshold`` suppresses; IoU equal to it does not.
    class_ids : (N,) array_like of int, optional
        Per-class NMS when given (values must fit in int32), class-agnostic when None.

    Returns
    -------
    (K,) ndarray of int64
        Indices into ``boxes`` of the kept boxes, by descending score (ties by index). Running NMS
        again on the kept boxes keeps them all.

    Raises
    ------
    ValueError
        Shapes other than (N, 4) / (N,), NaN or infinity in boxes or scores, a coordinate past
        ±:data:`MAX_COORDINATE`, a NaN threshold.

    Notes
    -----
    Greedy NMS costs one pass over the later candidates (of its class) for every kept box: O(N·K)
    for K kept boxes, O(N²) when nearly all are kept (many disjoint boxes). Inside
    :func:`postprocess` N is bounded by the heads' cells (2,535 for the shipped 416 × 416 model:
    3 anchors over 13² and 26² cells), a few milliseconds at most. A direct caller with many disjoint
    boxes pays about 0.1 s for 10⁴, 10 s for 10⁵ and, growing as N², some 15 minutes for 10⁶ (one
    core, AVX-512), with the GIL released but no way to interrupt the call. When N is not bounded,
    cap it first, e.g. the 30,000 best: ``top = np.argsort(-scores, kind="stable")[:30000]``, then
    ``top[nms(boxes[top], scores[top], iou_threshold)]``.
    TypeError
        Non-numeric arrays, or non-integer class_ids.
    """
    return _core.nms(boxes, scores, float(iou_threshold), class_ids)


def gbciou_merge(
    boxes: np.ndarray,
    scores: np.ndarray,
    class_ids: np.ndarray | None,
    threshold: float = defaults.GBCIOU,
    mode: str = defaults.MERGE,
    merge_iou: float = defaults.MERGE_IOU,
) -> Detections:
    """Merge overlapping predictions of one cell with GBCIOU (the paper's Algorithm 3).

    For a higher-scoring box B and another box A, with I their intersection area:
    ``Union = area(A) + area(B) - I + 1e-16``, ``E = area(smallest box enclosing both) + 1e-16``,
    ``penalty = (E - Union) / E`` (float64). If ``penalty < threshold`` B becomes the enclosing box
    of A and B (B's score and class); otherwise B wins and A is dropped. The paper's line 4 writes the
    enclosing width as ``max(x2) - max(x1)``; this uses the true enclosing box, ``max(x2) - min(x1)``
    wide (and likewise in y).

    Boxes are visited by score, highest first (ties: lower index first). Merging ignores classes:
    after class-aware NMS what is left to merge are predictions of one cell under two classes.

    Parameters
    ----------
    boxes : (N, 4) array_like of float32
        Corner boxes ``(x1, y1, x2, y2)``, within ±:data:`MAX_COORDINATE`.
    scores : (N,) array_like of float32
    class_ids : (N,) array_like of int or None
        Carried along (the merged box keeps B's class); None means all 0.
    threshold : float
        Merge when ``penalty < threshold``.
    mode : {"multi", "single", "none"}
        ``"multi"`` (frames with many cells): A is compared only with the first, i.e. highest-scoring,
        kept box whose IoU with it is ``> merge_iou``; with none, A is kept as a cell of its own, so
        separate cells are never lost. One pass: kept boxes are not merged with one another later.
        ``"single"`` (the paper's one-cell-per-frame setting): every box is folded into the top box;
        the result is one box (or none for no input). ``"none"``: no merging.
    merge_iou : float
        The IoU floor of ``"multi"`` mode (float32 IoU, strictly greater).

    Returns
    -------
    boxes : (K, 4) ndarray of float32
    scores : (K,) ndarray of float32
    class_ids : (K,) ndarray of int32
        K <= N, by descending score (ties by index of the box that was kept).

    Raises
    ------
    ValueError
        Bad shapes, NaN/inf, a coordinate past ±:data:`MAX_COORDINATE`, an unknown mode.

    Notes
    -----
    ``"multi"`` compares each box with the kept cells: O(N·K) like :func:`nms`.
    TypeError
        Non-numeric arrays or non-integer class_ids.
    """
    return _core.gbciou_merge(boxes, scores, class_ids, float(threshold), str(mode), float(merge_iou))


def postprocess(
    heads: Sequence[np.ndarray],
    params: np.ndarray,
    *,
    strides: Sequence[float],
    anchors: Sequence[np.ndarray],
    num_classes: int,
    score_threshold: float = defaults.SCORE,
    nms_iou: float = defaults.NMS_IOU,
    merge: str = defaults.MERGE,
    gbciou: float = defaults.GBCIOU,
    merge_iou: float = defaults.MERGE_IOU,
    class_agnostic: bool = False,
    max_detections: int | None = defaults.MAX_DETECTIONS,
) -> list[Detections]:
    """Post-process a batch of raw head outputs in one compiled call.

    Per image: :func:`decode` (``score >= score_threshold``) → :func:`nms` (IoU ``> nms_iou``
    suppresses; per class unless ``class_agnostic``) → :func:`gbciou_merge` (``merge`` mode) →
    map back through the letterbox, ``x = (xn - pad_x) / scale``, ``y = (yn - pad_y) / scale``
    (float64) → clip to ``[0, width] × [0, height]`` → drop boxes left empty (they lay wholly in
    the padding or outside the frame) → keep the first ``max_detections``.

    Parameters
    ----------
    heads, strides, anchors, num_classes
        As for :func:`decode`.
    params : (N, 5) array_like of float32
        Per image the letterbox ``[scale, pad_x, pad_y, width, height]`` (as returned by
        ``fastcell.ops.letterbox``); a (5,) row is accepted for N = 1.
    score_threshold, nms_iou, merge, gbciou, merge_iou, class_agnostic
        See :class:`fastcell.spec.Thresholds`; ``merge`` is the :func:`gbciou_merge` mode and
        ``gbciou`` its penalty threshold.
    max_detections : int or None
        At most this many boxes per image (>= 1), highest scores first; None for no cap.

    Returns
    -------
    list of (boxes, scores, class_ids), one per image
        boxes : (K, 4) ndarray of float32 in original-image pixels, clipped; scores : (K,) float32;
        class_ids : (K,) int32. By descending score. Empty results are ``(0, 4)``/``(0,)`` arrays.

    Raises
    ------
    ValueError
        As :func:`decode`, plus params of the wrong shape or with a non-positive scale/size.
    """
    return _core.postprocess(
        heads, params, strides, anchors, int(num_classes), float(score_threshold), float(nms_iou), str(merge),
        float(gbciou), float(merge_iou), bool(class_agnostic), None if max_detections is None else int(max_detections),
    )
