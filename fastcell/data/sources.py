"""Readers for the other labs' data sets, and the merge of several sources into one training set.

Each public blood-cell data set labels a different subset of the cells and has its own layout:

=============== ============================================= ===========================
source           layout                                        labels
=============== ============================================= ===========================
BCCD             Pascal VOC (``Annotations/``, splits given)   WBC, RBC, Platelets boxes
Chula RBC-12     ``Dataset/N.jpg`` + ``Label/N.txt``            RBC centre *points*
BCDD             ``images/*.png`` + ``annotations.csv``         RBC, WBC boxes (0–1)
pig-wbc          ``{train,valid,test}/{images,labels}`` YOLO    WBC boxes
=============== ============================================= ===========================

All are mapped onto :data:`CLASSES`; every :class:`~fastcell.data.labels.Sample` records which
classes its source labels (``Sample.labelled``), so the loss never teaches an unlabelled class as
background. Sources without a published split (Chula, BCDD) are split by a hash of the file name
(:func:`split_of`): deterministic, independent of the file order, stable when files are added.

Point labels become boxes by :func:`points_to_boxes` (the rule and its measured error are in its
docstring).
"""

from __future__ import annotations

import csv
import hashlib
from pathlib import Path

import numpy as np

from fastcell.data.labels import LabelIssue, LabelSet, _check_box, _finish, load_labels

__all__ = ["CLASSES", "SOURCES", "split_of", "points_to_boxes", "read_chula", "read_bcdd", "read_yolo_folders",
           "detect_source", "load_source", "merge_sources", "pack_sources", "read_packed"]

#: the unified class list, in the order of the BCCD model (the first shipped one)
CLASSES = ("WBC", "RBC", "Platelets")

#: name → (which classes it labels, licence, upstream commit); used by training, model.json and reports
SOURCES = {
    "bccd": {"labels": ("WBC", "RBC", "Platelets"), "licence": "MIT",
             "origin": "github.com/Shenggan/BCCD_Dataset@d272fb14"},
    "chula-rbc12": {"labels": ("RBC",), "licence": "MIT",
                    "origin": "github.com/Chula-PIC-Lab/Chula-RBC-12-Dataset@fa130f48"},
    "bcdd": {"labels": ("WBC", "RBC"), "licence": "MIT",
             "origin": "github.com/draaslan/blood-cell-detection-dataset@721d642c"},
    "pig-wbc": {"labels": ("WBC",), "licence": "CC0-1.0",
                "origin": "github.com/FrancescaIE/WBC-detection-dataset@b4dc56f3"},
}

_SPLIT_SHARES = (("test", 15), ("val", 10))  # percent of the hash buckets; the rest is train


def split_of(name: str) -> str:
    """The split of a file of a source without published splits: 15 % test, 10 % val, 75 % train.

    Decided by the first two bytes of the MD5 of ``name`` (the file name, no folder), so it never
    depends on the listing order and a file keeps its split when others are added.
    """
    bucket = int.from_bytes(hashlib.md5(name.encode("utf-8", "surrogateescape")).digest()[:2], "big") % 100
    edge = 0
    for split, share in _SPLIT_SHARES:
        edge += share
        if bucket < edge:
            return split
    return "train"


def _in_split(name: str, split: str) -> bool:
    if split == "all":
        return True
    if split == "trainval":
        return split_of(name) in ("train", "val")
    return split_of(name) == split


def points_to_boxes(image: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Boxes for cells labelled by their centre points.

    Rule: the cells are the foreground of an Otsu threshold on the (blurred) HSV saturation, with
    the pale centres of red cells filled. A point whose foreground blob holds no other point, and
    whose size lies within 0.6–1.6× the image's typical cell, gets the blob's bounding box. Every
    other point (touching cells, a blob missed by the threshold) gets a square of the typical cell
    size centred on it: the median side of the single-point blobs when there are at least three,
    else the median distance between neighbouring points (touching cells are one diameter apart).

    Measured on BCCD's test red cells, whose true boxes are known, from their centres
    (``tests/test_sources.py`` checks it): mean IoU with the true box 0.70, 84 % of boxes with IoU
    ≥ 0.5 — BCCD's cells touch, so most get the square; on Chula 65 % of points get their own blob.

    Parameters
    ----------
    image : (H, W, 3) uint8 BGR
    points : (N, 2) float, x y in pixels

    Returns
    -------
    (N, 4) float32 x1 y1 x2 y2, clipped to the image; rows of NaN where no size could be estimated
    (a single point on an image without a usable blob).
    """
    import cv2

    points = np.asarray(points, np.float32).reshape(-1, 2)
    h, w = image.shape[:2]
    if not len(points):
        return np.zeros((0, 4), np.float32)
    sat = cv2.GaussianBlur(cv2.cvtColor(image, cv2.COLOR_BGR2HSV)[:, :, 1], (5, 5), 0)
    _, fg = cv2.threshold(sat, 0, 255, cv2.THRESH_BINARY + cv2.THRESH_OTSU)
    fg = cv2.morphologyEx(fg, cv2.MORPH_OPEN, np.ones((3, 3), np.uint8))
    # fill holes that do not touch the border: the pale centre of a red cell is part of it
    n, lab, stats, _ = cv2.connectedComponentsWithStats(255 - fg, connectivity=4)
    inner = (stats[:, 0] > 0) & (stats[:, 1] > 0) & (stats[:, 0] + stats[:, 2] < w) & (stats[:, 1] + stats[:, 3] < h)
    inner[0] = False  # label 0 is the foreground itself
    fg[inner[lab]] = 255
    n, lab, stats, _ = cv2.connectedComponentsWithStats(fg, connectivity=8)
    px = np.clip(np.round(points).astype(np.int64), 0, [w - 1, h - 1])
    comp = lab[px[:, 1], px[:, 0]]
    counts = np.bincount(comp, minlength=n)
    side = np.maximum(stats[comp, 2], stats[comp, 3]).astype(np.float32)
    single = (comp > 0) & (counts[comp] == 1)
    if single.sum() >= 3:
        typical = float(np.median(side[single]))
    elif len(points) >= 2:
        d = np.linalg.norm(points[:, None] - points[None], axis=2)
        np.fill_diagonal(d, np.inf)
        typical = float(np.median(d.min(1)))
    else:
        typical = float("nan")
    own = single & (side >= 0.6 * typical) & (side <= 1.6 * typical)
    boxes = np.concatenate([points - typical / 2, points + typical / 2], 1)
    s = stats[comp[own]]
    boxes[own] = np.stack([s[:, 0], s[:, 1], s[:, 0] + s[:, 2], s[:, 1] + s[:, 3]], 1)
    boxes[:, [0, 2]] = boxes[:, [0, 2]].clip(0, w)
    boxes[:, [1, 3]] = boxes[:, [1, 3]].clip(0, h)
    return boxes.astype(np.float32)


def _labelled(source: str) -> tuple[bool, ...]:
    labels = SOURCES[source]["labels"]
    return tuple(c in labels for c in CLASSES)


def read_chula(root: str | Path, split: str = "train") -> LabelSet:
    """Chula RBC-12: red-cell centre points (any of the 13 morphology types → ``RBC``) as boxes.

    Fields without a label file are left out (their cells are unlabelled, not absent).
    """
    import cv2

    root = Path(root)
    label_dir, image_dir = root / "Label", root / "Dataset"
    if not label_dir.is_dir() or not image_dir.is_dir():
        raise FileNotFoundError(f"not a Chula RBC-12 folder: {root} needs Label/ and Dataset/")
    rbc = CLASSES.index("RBC")
    samples, issues = [], []
    for label in sorted(label_dir.glob("*.txt"), key=lambda p: (len(p.stem), p.stem)):
        image = image_dir / f"{label.stem}.jpg"
        if not _in_split(image.name, split):
            continue
        if not image.is_file():
            issues.append(LabelIssue(label, 0, f"no image {image.name} for this label file"))
            continue
        points = []
        for number, line in enumerate(label.read_text().splitlines(), 1):
            parts = line.split()
            if not parts:
                continue
            try:
                x, y = float(parts[0]), float(parts[1])
                int(parts[2])
            except (ValueError, IndexError):
                issues.append(LabelIssue(label, number, f"cannot parse {line!r}: expected 'x y type'"))
                continue
            points.append((x, y))
        im = cv2.imread(str(image), cv2.IMREAD_COLOR)
        if im is None:
            issues.append(LabelIssue(image, 0, "cannot read the image"))
            continue
        height, width = im.shape[:2]
        boxes = points_to_boxes(im, np.asarray(points, np.float32))
        keep = [i for i, b in enumerate(boxes) if _check_box(tuple(float(v) for v in b), width, height) is None]
        for i in sorted(set(range(len(boxes))) - set(keep)):
            issues.append(LabelIssue(label, i + 1, f"point {points[i]} gave no usable box"))
        sample = _finish(image, width, height, boxes[keep], [rbc] * len(keep))
        sample.labelled, sample.source = _labelled("chula-rbc12"), "chula-rbc12"
        samples.append(sample)
    return LabelSet(CLASSES, samples, issues, root, split)


def read_bcdd(root: str | Path, split: str = "train") -> LabelSet:
    """BCDD: ``annotations.csv`` with boxes normalised to 0–1 and labels ``rbc`` / ``wbc``."""
    import cv2

    root = Path(root)
    table = root / "annotations.csv"
    if not table.is_file():
        raise FileNotFoundError(f"not a BCDD folder: {table} is missing")
    names = {"rbc": CLASSES.index("RBC"), "wbc": CLASSES.index("WBC")}
    rows: dict[str, list[tuple[int, dict]]] = {}
    with open(table, newline="") as f:
        for number, row in enumerate(csv.DictReader(f), 2):
            rows.setdefault(row["image"], []).append((number, row))
    images = sorted(p for p in (root / "images").iterdir() if p.suffix.lower() == ".png")
    samples, issues = [], []
    for image in images:
        if not _in_split(image.name, split):
            continue
        im = cv2.imread(str(image), cv2.IMREAD_COLOR)
        if im is None:
            issues.append(LabelIssue(image, 0, "cannot read the image"))
            continue
        height, width = im.shape[:2]
        boxes, ids = [], []
        for number, row in rows.get(image.name, []):
            label = row.get("label", "").strip().lower()
            if label not in names:
                issues.append(LabelIssue(table, number, f"unknown label {label!r} (known: rbc, wbc)"))
                continue
            try:
                x1, y1, x2, y2 = (float(row[k]) for k in ("xmin", "ymin", "xmax", "ymax"))
            except (KeyError, ValueError) as exc:
                issues.append(LabelIssue(table, number, f"bad box: {exc}"))
                continue
            box = (x1 * width, y1 * height, x2 * width, y2 * height)
            problem = _check_box(box, width, height)
            if problem:
                issues.append(LabelIssue(table, number, problem))
                continue
            boxes.append(box)
            ids.append(names[label])
        sample = _finish(image, width, height, boxes, ids)
        sample.labelled, sample.source = _labelled("bcdd"), "bcdd"
        samples.append(sample)
    return LabelSet(CLASSES, samples, issues, root, split)


def read_yolo_folders(root: str | Path, split: str = "train", class_names: tuple[str, ...] = ("WBC",),
                      source: str = "pig-wbc") -> LabelSet:
    """A YOLO data set laid out as ``<split>/images`` + ``<split>/labels`` without a data.yaml.

    ``val`` also finds a folder named ``valid`` (Roboflow's name). ``class_names`` maps the file's
    class indices onto :data:`CLASSES`.
    """
    root = Path(root)
    folder = root / split
    if split == "val" and not folder.is_dir():
        folder = root / "valid"
    if not (folder / "images").is_dir():
        raise FileNotFoundError(f"no split {split!r}: {folder / 'images'} is missing")
    names = list(class_names)
    sub = _read_yolo_dir(folder, names)
    index = [CLASSES.index(c) for c in names]
    for sample in sub.samples:
        sample.class_ids = np.asarray([index[i] for i in sample.class_ids], np.int64)
        sample.labelled, sample.source = tuple(c in names for c in CLASSES), source
    return LabelSet(CLASSES, sub.samples, sub.issues, root, split)


def _read_yolo_dir(folder: Path, names: list[str]) -> LabelSet:
    """YOLO ``images/`` + ``labels/`` of one split, through :func:`~fastcell.data.labels.read_yolo`."""
    import tempfile

    from fastcell.data.labels import read_yolo

    with tempfile.TemporaryDirectory() as tmp:
        data_yaml = Path(tmp) / "data.yaml"
        data_yaml.write_text(f"path: {folder}\nsplit: images\nnames: [{', '.join(names)}]\n")
        return read_yolo(data_yaml, "split")


def detect_source(path: str | Path) -> str | None:
    """The name of a known source from its folder layout, or None."""
    path = Path(path)
    if (path / PACK_FILE).is_file():
        return "packed"
    if (path / "Annotations").is_dir():
        return "bccd"
    if (path / "Label").is_dir() and (path / "Dataset").is_dir():
        return "chula-rbc12"
    if (path / "annotations.csv").is_file() and (path / "images").is_dir():
        return "bcdd"
    if (path / "train" / "images").is_dir() and not (path / "data.yaml").is_file():
        return "pig-wbc"
    return None


def load_source(path: str | Path, split: str = "train") -> LabelSet:
    """One source, in :data:`CLASSES` order, its samples tagged with the source and labelled classes.

    Known layouts are detected (:func:`detect_source`); any other data set is read by
    :func:`~fastcell.data.labels.load_labels` and must use the class names of :data:`CLASSES`.
    """
    kind = detect_source(path)
    if kind == "packed":
        return read_packed(path, split)
    if kind == "chula-rbc12":
        return read_chula(path, split)
    if kind == "bcdd":
        return read_bcdd(path, split)
    if kind == "pig-wbc":
        return read_yolo_folders(path, split)
    labels = load_labels(path, split, CLASSES if kind == "bccd" else None)
    unknown = [c for c in labels.classes if c not in CLASSES]
    if unknown:
        raise ValueError(f"{path}: classes {unknown} are not among {CLASSES}; rename them in the labels")
    index = [CLASSES.index(c) for c in labels.classes]
    name = kind or Path(path).name
    for sample in labels.samples:
        sample.class_ids = np.asarray([index[i] for i in sample.class_ids], np.int64)
        sample.labelled = tuple(c in labels.classes for c in CLASSES)
        sample.source = name
    return LabelSet(CLASSES, labels.samples, labels.issues, Path(path), split)


def merge_sources(sets: list[LabelSet]) -> LabelSet:
    """One LabelSet of several sources (all in :data:`CLASSES` order)."""
    samples = [s for ls in sets for s in ls.samples]
    issues = [i for ls in sets for i in ls.issues]
    split = sets[0].split if sets else ""
    return LabelSet(CLASSES, samples, issues, None, split)


# -- packed sets: several sources in one small folder (to carry them to a training machine) -------
PACK_FILE = "fastcell_pack.json"


def pack_sources(paths: list[str | Path], out: str | Path, splits: tuple[str, ...] = ("train", "val"),
                 max_side: int = 480, quality: int = 85) -> Path:
    """Write the given sources' splits as JPEGs of at most ``max_side`` pixels plus one JSON index.

    The letterbox of a training image only ever shrinks it to 416, so images are stored no larger
    than needed; point labels are stored as the boxes :func:`points_to_boxes` gave them. The
    result reads back with :func:`load_source` (``fastcell train PACKED_FOLDER``).
    """
    import json

    import cv2

    out = Path(out)
    (out / "images").mkdir(parents=True, exist_ok=True)
    index: dict = {"classes": list(CLASSES), "sources": {}, "splits": {}}
    if (out / PACK_FILE).is_file():  # add to an existing pack (other sources or splits)
        index = json.loads((out / PACK_FILE).read_text())
    for path in paths:
        for split in splits:
            labels = load_source(path, split)
            rows = index["splits"].setdefault(split, [])
            rows[:] = [r for r in rows if r["source"] != (labels.samples[0].source if labels.samples else None)]
            for k, sample in enumerate(labels.samples):
                source = sample.source or Path(path).name
                index["sources"][source] = SOURCES.get(source, {})
                image = cv2.imread(str(sample.image), cv2.IMREAD_COLOR)
                scale = min(1.0, max_side / max(image.shape[:2]))
                if scale < 1.0:
                    size = (round(image.shape[1] * scale), round(image.shape[0] * scale))
                    image = cv2.resize(image, size, interpolation=cv2.INTER_AREA)
                name = f"{source}/{split}_{k:05d}.jpg"
                (out / "images" / source).mkdir(exist_ok=True)
                cv2.imwrite(str(out / "images" / name), image, [cv2.IMWRITE_JPEG_QUALITY, quality])
                sx, sy = image.shape[1] / sample.width, image.shape[0] / sample.height
                boxes = sample.boxes * np.array([sx, sy, sx, sy], np.float32)
                rows.append({"file": name, "original": str(sample.image), "source": source,
                             "width": int(image.shape[1]), "height": int(image.shape[0]),
                             "labelled": list(sample.labelled or (True,) * len(CLASSES)),
                             "boxes": np.round(boxes, 2).tolist(), "class_ids": sample.class_ids.tolist()})
    (out / PACK_FILE).write_text(json.dumps(index))
    return out


def read_packed(root: str | Path, split: str = "train", sources: list[str] | None = None) -> LabelSet:
    """A split of a folder written by :func:`pack_sources` (optionally only some of its sources)."""
    import json

    root = Path(root)
    index = json.loads((root / PACK_FILE).read_text())
    if split not in index["splits"]:
        raise FileNotFoundError(f"{root}: no split {split!r} (has {', '.join(index['splits'])})")
    samples = []
    for row in index["splits"][split]:
        if sources is not None and row["source"] not in sources:
            continue
        sample = _finish(root / "images" / row["file"], row["width"], row["height"], row["boxes"], row["class_ids"])
        sample.labelled, sample.source = tuple(bool(v) for v in row["labelled"]), row["source"]
        samples.append(sample)
    return LabelSet(tuple(index["classes"]), samples, [], root, split)
