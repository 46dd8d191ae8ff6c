"""The deployment metadata of a model: the one source of truth beside ``model.onnx``.

Every stage after training reads its constants from a :class:`ModelSpec`, loaded from the JSON file
that export writes next to the ONNX file (``engines/<name>/model.json``). Nothing else in fastcell
hard-codes classes, anchors, strides, thresholds or HSV ranges.

The head → anchor assignment lives here, in :data:`HEAD_ANCHORS`, and nowhere else. The authors'
YOLOv3-tiny cfg gave the 26×26 head anchors 1, 2, 3 (``mask = 1,2,3``), skipping the smallest
anchor and sharing anchor 3 with the 13×13 head; fastcell gives the 26×26 head (stride 16) the three
smallest anchors 0, 1, 2 and the 13×13 head (stride 32) the three largest 3, 4, 5.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from fastcell import defaults

__all__ = ["HEAD_ANCHORS", "Head", "Thresholds", "Segmentation", "ModelSpec", "FORMAT"]

FORMAT = "fastcell-model/1"

#: stride → indices into the six area-sorted anchors. Order = the order of the model's outputs.
HEAD_ANCHORS: dict[int, tuple[int, int, int]] = {32: (3, 4, 5), 16: (0, 1, 2)}


@dataclass(frozen=True)
class Head:
    """One YOLO output: its ONNX output name, stride in input pixels and anchor indices."""

    output: str
    stride: int
    anchors: tuple[int, ...]


@dataclass(frozen=True)
class Thresholds:
    """Post-processing thresholds.

    score : keep a candidate when objectness × class probability ``>= score``.
    nms_iou : NMS suppresses a box whose IoU with a kept box is ``> nms_iou``.
    gbciou : GBCIOU merges two boxes when their penalty ``(E - Union) / E < gbciou``.
    merge_iou : in ``multi`` mode a box is merged only into a box it overlaps with IoU ``> merge_iou``.
    merge : ``"multi"`` (many cells per frame, never loses separate cells), ``"single"`` (the paper's
        one-cell-per-frame setting: all predictions fold into one box) or ``"none"``.
    class_agnostic : NMS across classes (True) or within each class (False). Model files written
        before this name read ``class_agnostic_nms`` as this.
    max_detections : at most this many boxes per image (>= 1), highest scores first; None: no limit.

    Raises
    ------
    ValueError
        On construction: an unknown ``merge``, a ``max_detections`` below 1, or a threshold that is
        not a finite number in [0, 1] (``score``, ``nms_iou``, ``gbciou``, ``merge_iou``).
    TypeError
        A threshold that is not a number.
    """

    score: float = defaults.SCORE
    nms_iou: float = defaults.NMS_IOU
    gbciou: float = defaults.GBCIOU
    merge_iou: float = defaults.MERGE_IOU
    merge: str = defaults.MERGE
    class_agnostic: bool = False
    max_detections: int | None = defaults.MAX_DETECTIONS

    def __post_init__(self) -> None:
        # Checked here, so a bad JSON file or override fails when it is read, not at the first frame.
        for name in ("score", "nms_iou", "gbciou", "merge_iou"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
                raise TypeError(f"{name} must be a number in [0, 1], got {value!r}")
            if not 0.0 <= float(value) <= 1.0:  # also false for nan
                raise ValueError(f"{name} must be a finite number in [0, 1], got {value!r}")
        if self.merge not in ("multi", "single", "none"):
            raise ValueError(f"merge must be 'multi', 'single' or 'none', got {self.merge!r}")
        if self.max_detections is not None and not int(self.max_detections) >= 1:
            raise ValueError(f"max_detections must be >= 1 or None (no limit), got {self.max_detections!r}")


@dataclass(frozen=True)
class Segmentation:
    """Circle segmentation with HSV refinement, in OpenCV units (H 0–179, S and V 0–255).

    disc : ``"circle"`` (radius min(w, h)/2 at the box centre) or ``"ellipse"`` (inscribed ellipse).
    hsv_low, hsv_high : inclusive in-range bounds; ``hsv_low[0] > hsv_high[0]`` wraps hue through 0.
        Both ``None`` means no HSV refinement (the disc alone); one without the other is refused.
        Frames that were grayscale get only the V bounds (see :meth:`bounds`).
    fill : BGR colour of the pixels outside every mask in the segmented image.

    Raises
    ------
    ValueError
        On construction: only one of ``hsv_low``/``hsv_high``, a bound that is not 3 integers within
        H 0–180, S and V 0–255, or an unknown ``disc``.
    """

    # Defaults chosen by measurement on wbc-seg with expert boxes (benchmarks/eval_segmentation.py):
    # ellipse alone IoU 0.941, ellipse + S >= 10 (drops the near-white background) 0.944,
    # circle alone 0.920. Bounds chosen on one half of the images, confirmed on the other.
    disc: str = "ellipse"
    hsv_low: tuple[int, int, int] | None = (0, 10, 0)
    hsv_high: tuple[int, int, int] | None = (179, 255, 255)
    fill: tuple[int, int, int] = (0, 0, 0)

    def __post_init__(self) -> None:
        # Checked here, so a bad JSON file or override fails when it is read, not at the first frame.
        if (self.hsv_low is None) != (self.hsv_high is None):
            raise ValueError("hsv_low and hsv_high must both be given or both be None, got "
                             f"hsv_low={self.hsv_low!r}, hsv_high={self.hsv_high!r}")
        for name in ("hsv_low", "hsv_high"):
            bound = getattr(self, name)
            if bound is not None and not (len(bound) == 3 and all(
                    isinstance(v, (int, np.integer)) and 0 <= v <= top for v, top in zip(bound, (180, 255, 255)))):
                raise ValueError(f"{name} must be 3 integers (H 0–180, S 0–255, V 0–255), got {bound!r}")
        if self.disc not in ("circle", "ellipse"):
            raise ValueError(f"disc must be 'circle' or 'ellipse', got {self.disc!r}")

    def bounds(self, gray: bool = False) -> tuple[tuple[int, int, int] | None, tuple[int, int, int] | None]:
        """The HSV bounds to apply to a frame: for a frame that was grayscale, the V bounds only.

        A gray pixel seen as BGR has H = 0 and S = 0, so hue and saturation bounds say nothing about
        it (the default S >= 10 would reject every pixel); its V is its grey level.

        Parameters
        ----------
        gray : bool, default False
            Whether the frame was grayscale (a 2-D or 1-channel array) before it became BGR.

        Returns
        -------
        hsv_low, hsv_high : tuple of 3 int, or None
            ``(self.hsv_low, self.hsv_high)`` for colour frames; ``((0, 0, low_v), (180, 255, high_v))``
            for gray ones; ``(None, None)`` when there is no HSV refinement.
        """
        if not gray or self.hsv_low is None or self.hsv_high is None:
            return self.hsv_low, self.hsv_high
        return (0, 0, self.hsv_low[2]), (180, 255, self.hsv_high[2])


def check_cell_size(value: Any) -> float | str | None:
    """``None``, ``"auto"`` or a finite cell diameter in pixels > 0; anything else raises."""
    if value is None or value == "auto":
        return value
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise TypeError(f"cell_size must be None, 'auto' or a number of pixels; got {value!r}")
    if not (np.isfinite(value) and value > 0):
        raise ValueError(f"cell_size must be a finite number of pixels > 0; got {value!r}")
    return float(value)


@dataclass(frozen=True)
class ModelSpec:
    """Everything the runtime needs to know about a model, loaded from its metadata JSON."""

    classes: tuple[str, ...]
    anchors: np.ndarray  # (6, 2) float32, (w, h) in input pixels, sorted by area
    input_size: int = defaults.INPUT_SIZE
    heads: tuple[Head, ...] = tuple(Head(name, stride, HEAD_ANCHORS[stride])
                                     for name, stride in zip(defaults.OUTPUT_NAMES, (32, 16)))
    thresholds: Thresholds = field(default_factory=Thresholds)
    segmentation: Segmentation = field(default_factory=Segmentation)
    pad_value: int = defaults.PAD_VALUE
    #: typical cell diameter in the *frame's* pixels: frames are rescaled so their cells appear at
    #: ``train_cell_size`` in the network input. None: plain letterbox; "auto": estimated per frame
    #: (see :mod:`fastcell.scale`)
    cell_size: float | str | None = None
    #: the cell diameter, in network-input pixels, the model knows best (its training scale)
    train_cell_size: float = defaults.TRAIN_CELL_SIZE
    name: str = "fastcell"
    model_file: str = defaults.MODEL_FILE
    extra: dict[str, Any] = field(default_factory=dict)  # training data, licence, metrics, sha256 ...
    path: Path | None = None  # the JSON file this spec was read from, if any

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def head_width(self) -> int:
        """Channels of each head: 3 · (classes + 5)."""
        return 3 * (self.num_classes + 5)

    def head_anchors(self, head: Head) -> np.ndarray:
        """The (3, 2) float32 anchors (pixels) of one head."""
        return np.ascontiguousarray(self.anchors[list(head.anchors)], dtype=np.float32)

    @property
    def model_path(self) -> Path:
        if self.path is None:
            raise ValueError("this ModelSpec was not read from a file, so it has no model path")
        return self.path.parent / self.model_file

    @property
    def int8_path(self) -> Path | None:
        """The calibrated int8 model named by ``model.json["int8"]["file"]``, or None when it names none.

        Written by :func:`fastcell.export.quantize_int8` (``fastcell export --calib``); the CPU
        backends read it for ``precision="int8"``.
        """
        if self.path is None:
            raise ValueError("this ModelSpec was not read from a file, so it has no int8 model path")
        entry = self.extra.get("int8")
        if not isinstance(entry, dict) or not entry.get("file"):
            return None
        return self.path.parent / str(entry["file"])

    # -- JSON --------------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "name": self.name,
            "model_file": self.model_file,
            "classes": list(self.classes),
            "input_size": self.input_size,
            "anchors": np.asarray(self.anchors, dtype=float).round(3).tolist(),
            "heads": [dataclasses.asdict(h) | {"anchors": list(h.anchors)} for h in self.heads],
            "thresholds": dataclasses.asdict(self.thresholds),
            "segmentation": {
                k: (list(v) if isinstance(v, tuple) else v)
                for k, v in dataclasses.asdict(self.segmentation).items()
            },
            "pad_value": self.pad_value,
            "cell_size": self.cell_size,
            "train_cell_size": self.train_cell_size,
            **self.extra,
        }

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        path.write_text(json.dumps(self.to_dict(), indent=2) + "\n")
        return path

    @classmethod
    def from_dict(cls, d: dict[str, Any], path: Path | None = None) -> "ModelSpec":
        if d.get("format") != FORMAT:
            raise ValueError(f"not a fastcell model description: format {d.get('format')!r}, expected {FORMAT!r}")
        known = {"format", "name", "model_file", "classes", "input_size", "anchors", "heads",
                 "thresholds", "segmentation", "pad_value", "cell_size", "train_cell_size"}
        anchors = np.asarray(d["anchors"], dtype=np.float32)
        if anchors.shape != (6, 2):
            raise ValueError(f"anchors must be 6 (w, h) pairs, got shape {anchors.shape}")
        thresholds = dict(d.get("thresholds", {}))
        if "class_agnostic_nms" in thresholds:  # the name older model.json files use (engines/bccd's)
            old = thresholds.pop("class_agnostic_nms")
            thresholds.setdefault("class_agnostic", old)
        seg = dict(d.get("segmentation", {}))
        for key in ("hsv_low", "hsv_high", "fill"):
            if seg.get(key) is not None:
                seg[key] = tuple(int(v) for v in seg[key])
        return cls(
            classes=tuple(d["classes"]),
            anchors=anchors,
            input_size=int(d.get("input_size", defaults.INPUT_SIZE)),
            heads=tuple(Head(h["output"], int(h["stride"]), tuple(h["anchors"])) for h in d["heads"]),
            thresholds=Thresholds(**thresholds),
            segmentation=Segmentation(**seg),
            pad_value=int(d.get("pad_value", defaults.PAD_VALUE)),
            cell_size=check_cell_size(d.get("cell_size")),
            train_cell_size=float(d.get("train_cell_size", defaults.TRAIN_CELL_SIZE)),
            name=d.get("name", "fastcell"),
            model_file=d.get("model_file", defaults.MODEL_FILE),
            extra={k: v for k, v in d.items() if k not in known},
            path=path,
        )

    @classmethod
    def load(cls, path: str | Path) -> "ModelSpec":
        """Read a metadata JSON (or the ``model.json`` inside a model folder)."""
        path = Path(path)
        if path.is_dir():
            path = path / "model.json"
        if not path.is_file():
            raise FileNotFoundError(f"no model metadata at {path}")
        return cls.from_dict(json.loads(path.read_text()), path=path.resolve())

    def replace(self, **changes: Any) -> "ModelSpec":
        return dataclasses.replace(self, **changes)


def engines_dirs() -> list[Path]:
    """Where shipped models live: inside the installed package, then the checkout's ``engines/``."""
    here = Path(__file__).resolve().parent
    return [p for p in (here / "engines", here.parent / "engines") if p.is_dir()]


def find_model(model: str | Path = "default") -> Path:
    """Resolve a model name (``"default"``, ``"bccd"``) or a path to its metadata JSON."""
    p = Path(model)
    if p.suffix == ".json" and p.is_file():
        return p.resolve()
    if p.is_dir() and (p / "model.json").is_file():
        return (p / "model.json").resolve()
    if p.suffix == ".onnx" and p.with_suffix(".json").is_file():
        return p.with_suffix(".json").resolve()
    roots = engines_dirs()
    name = str(model)
    if name == "default":
        for root in roots:
            marker = root / "DEFAULT"
            if marker.is_file():
                name = marker.read_text().strip()
                break
    for root in roots:
        candidate = root / name / "model.json"
        if candidate.is_file():
            return candidate.resolve()
    available = sorted({d.name for r in roots for d in r.iterdir() if (d / "model.json").is_file()})
    raise FileNotFoundError(
        f"no model {str(model)!r}: not a path to a model.json/model folder, and not among the shipped "
        f"models {available or '(none found)'} in {[str(r) for r in roots]}"
    )
