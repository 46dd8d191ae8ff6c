"""Head outputs → :class:`~fastcell.results.Result` objects.

One C++ call decodes, filters, NMS-es and GBCIOU-merges the whole batch (``fastcell.ops.postprocess``);
a second turns every frame's boxes into circle/HSV masks on an 8-bit BGR view of the frame
(``fastcell.ops.segment_cells_batch``). Frames that were grayscale get only the V bounds of the HSV
range (:meth:`fastcell.spec.Segmentation.bounds`). Every threshold comes from the model's
:class:`~fastcell.spec.ModelSpec` unless overridden.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Sequence

import numpy as np

from fastcell.frames import to_bgr8
from fastcell.results import Result
from fastcell.spec import ModelSpec, Segmentation, Thresholds

__all__ = ["Postprocessor", "OVERRIDABLE"]

#: the settings a caller may override, by the name of their ModelSpec field
#: (:class:`~fastcell.spec.Thresholds` and :class:`~fastcell.spec.Segmentation`)
OVERRIDABLE: frozenset[str] = frozenset(
    {f.name for f in dataclasses.fields(Thresholds)} | {f.name for f in dataclasses.fields(Segmentation)})
_THRESHOLDS = frozenset(f.name for f in dataclasses.fields(Thresholds))
#: names these settings had before they were given their field's name
_RENAMED = {"score_threshold": "score", "class_agnostic_nms": "class_agnostic"}


def apply_overrides(spec: ModelSpec, overrides: dict[str, Any]) -> ModelSpec:
    """A copy of ``spec`` with thresholds/segmentation fields replaced by ``overrides``.

    ``hsv_low`` and ``hsv_high`` are one range: they are overridden together (both ranges, or both
    None for no HSV refinement), never one alone.

    Raises
    ------
    TypeError
        For a name that is not in :data:`OVERRIDABLE`.
    ValueError
        For only one of ``hsv_low``/``hsv_high`` or a bad value (see :class:`~fastcell.spec.Thresholds`
        and :class:`~fastcell.spec.Segmentation`, which check them).
    """
    unknown = set(overrides) - OVERRIDABLE
    if unknown:
        renamed = "".join(f"; {old!r} is now called {_RENAMED[old]!r}" for old in sorted(unknown & set(_RENAMED)))
        raise TypeError(f"unknown option(s) {sorted(unknown)}; expected some of {sorted(OVERRIDABLE)}{renamed}")
    if ("hsv_low" in overrides) != ("hsv_high" in overrides):
        given = "hsv_low" if "hsv_low" in overrides else "hsv_high"
        raise ValueError(f"hsv_low and hsv_high must be overridden together (both ranges, or both None for no "
                         f"HSV refinement); got only {given}={overrides[given]!r}")
    sections: dict[str, dict[str, Any]] = {"thresholds": {}, "segmentation": {}}
    for key, value in overrides.items():
        if key in ("hsv_low", "hsv_high", "fill") and value is not None:
            value = tuple(int(v) for v in value)
        sections["thresholds" if key in _THRESHOLDS else "segmentation"][key] = value
    return spec.replace(
        thresholds=dataclasses.replace(spec.thresholds, **sections["thresholds"]),
        segmentation=dataclasses.replace(spec.segmentation, **sections["segmentation"]),
    )


class Postprocessor:
    """Turn a batch of raw head outputs into Results.

    Parameters
    ----------
    spec : ModelSpec
        Classes, anchors, strides, thresholds and segmentation settings.
    segment : bool
        Compute the instance label image and the segmented image (off: boxes only, faster).
    keep_image : bool
        Keep the original frame in each Result (writers need it for overlays and crops).
    """

    def __init__(self, spec: ModelSpec, *, segment: bool = True, keep_image: bool = True) -> None:
        self.spec = spec
        self.segment = bool(segment)
        self.keep_image = bool(keep_image)
        t = spec.thresholds
        self._decode_args = dict(
            strides=[h.stride for h in spec.heads],
            anchors=[spec.head_anchors(h) for h in spec.heads],
            num_classes=spec.num_classes,
            score_threshold=float(t.score),
            nms_iou=float(t.nms_iou),
            merge=t.merge,
            gbciou=float(t.gbciou),
            merge_iou=float(t.merge_iou),
            class_agnostic=bool(t.class_agnostic),
            max_detections=None if t.max_detections is None else int(t.max_detections),
        )
        s = spec.segmentation
        self._bounds = {gray: s.bounds(gray) for gray in (False, True)}
        self._segment_args = dict(disc=s.disc, fill=s.fill)

    def __call__(self, heads: Sequence[np.ndarray], params: np.ndarray, frames: Sequence[np.ndarray],
                 meta: Sequence[dict[str, Any]] | None = None) -> list[Result]:
        """Build one Result per frame.

        Parameters
        ----------
        heads : list of ndarray of float32
            The backend's outputs, in ``spec.heads`` order, batch size N.
        params : (N, 5) ndarray of float32
            The letterbox parameters of the batch.
        frames : sequence of N checked frames
            The original frames (any accepted dtype/channels).
        meta : sequence of N dicts, optional
            Per-frame ``frame_index``, ``source``, ``timestamp`` to store in the Results.
        """
        from fastcell import ops

        detections = ops.postprocess(list(heads), params, **self._decode_args)
        masks: list[tuple[np.ndarray | None, np.ndarray | None]] = [(None, None)] * len(detections)
        if self.segment:
            # checked frames are 2-D when they were grayscale ((H, W, 1) included); only then do
            # frames need ranges of their own
            gray = [frame.ndim == 2 for frame in frames]
            if any(gray):
                low, high = [self._bounds[g][0] for g in gray], [self._bounds[g][1] for g in gray]
            else:
                low, high = self._bounds[False]
            masks = ops.segment_cells_batch(
                [to_bgr8(frame) for frame in frames], [d[0] for d in detections], [d[1] for d in detections],
                low, high, **self._segment_args)
        results = []
        for i, (frame, (boxes, scores, class_ids), (labels, segmented)) in enumerate(zip(frames, detections, masks)):
            info = meta[i] if meta is not None else {}
            results.append(Result(
                boxes=boxes, scores=scores, class_ids=class_ids, classes=self.spec.classes,
                labels=labels, segmented=segmented, image=frame if self.keep_image else None,
                frame_index=int(info.get("frame_index", i)), source=info.get("source"),
                timestamp=float(info.get("timestamp", 0.0)), image_size=tuple(frame.shape[:2]),
                input_scale=float(params[i][0]),
            ))
        return results
