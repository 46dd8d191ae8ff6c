"""Label readers: Pascal VOC XML (BCCD's format), YOLO txt + data.yaml, and COCO JSON.

Every reader returns a :class:`LabelSet`: the class names, one :class:`Sample` per image of the
requested split, and a list of :class:`LabelIssue` for every label that was skipped (zero-size
boxes, boxes outside the image, unknown classes, unparsable lines) with the file and line it came
from. Bad labels never raise; a missing file or split does.

Boxes are ``(N, 4) float32`` ``x1, y1, x2, y2`` in original image pixels with ``x1 < x2``,
``y1 < y2``; Pascal VOC's 1-based inclusive pixel coordinates are converted with ``x1 - 1``,
``x2`` (so a box ``xmin=1, xmax=640`` spans the full 640-pixel width).
"""

from __future__ import annotations

import json
import xml.parsers.expat
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from fastcell.defaults import IMAGE_EXTENSIONS

__all__ = ["Sample", "LabelIssue", "LabelSet", "load_labels", "read_voc", "read_yolo", "read_coco"]



@dataclass
class Sample:
    """One labelled image: its path, size and boxes (original pixels) with class indices."""

    image: Path
    width: int
    height: int
    boxes: np.ndarray  # (N, 4) float32 x1 y1 x2 y2
    class_ids: np.ndarray  # (N,) int64
    #: which classes this image's source labels (None: all). An unlabelled class may be present
    #: in the image, so training must not teach it as background there (see ``YoloLoss``).
    labelled: tuple[bool, ...] | None = None
    source: str = ""  # the data set it came from (multi-source training and per-source figures)

    @property
    def name(self) -> str:
        return self.image.stem


@dataclass(frozen=True)
class LabelIssue:
    """A label that was skipped, with where it came from and why."""

    file: Path
    line: int
    reason: str

    def __str__(self) -> str:
        return f"{self.file}:{self.line}: {self.reason}"


@dataclass
class LabelSet:
    """The samples of one split of a data set."""

    classes: tuple[str, ...]
    samples: list[Sample]
    issues: list[LabelIssue] = field(default_factory=list)
    root: Path | None = None
    split: str = ""

    def __len__(self) -> int:
        return len(self.samples)

    def all_boxes(self) -> tuple[np.ndarray, np.ndarray]:
        """All boxes and class ids concatenated over the samples."""
        boxes = [s.boxes for s in self.samples]
        ids = [s.class_ids for s in self.samples]
        if not boxes:
            return np.zeros((0, 4), np.float32), np.zeros((0,), np.int64)
        return np.concatenate(boxes), np.concatenate(ids)


def _check_box(box: tuple[float, float, float, float], width: int, height: int, tolerance: float = 1.0) -> str | None:
    """Why a box is invalid, or None. Boxes may poke ``tolerance`` pixels outside and get clipped."""
    x1, y1, x2, y2 = box
    if not all(np.isfinite(v) for v in box):
        return f"box {box} has a non-finite coordinate"
    if x2 <= x1 or y2 <= y1:
        return f"zero-size or inverted box x1={x1:g} y1={y1:g} x2={x2:g} y2={y2:g}"
    if x1 < -tolerance or y1 < -tolerance or x2 > width + tolerance or y2 > height + tolerance:
        return f"box x1={x1:g} y1={y1:g} x2={x2:g} y2={y2:g} lies outside the {width}x{height} image"
    return None


def _finish(image: Path, width: int, height: int, boxes: list, ids: list) -> Sample:
    arr = np.asarray(boxes, np.float32).reshape(-1, 4)
    if len(arr):
        arr[:, [0, 2]] = arr[:, [0, 2]].clip(0, width)
        arr[:, [1, 3]] = arr[:, [1, 3]].clip(0, height)
    return Sample(image, int(width), int(height), arr, np.asarray(ids, np.int64).reshape(-1))


# -- Pascal VOC ------------------------------------------------------------------------------------
def _parse_voc_xml(path: Path) -> tuple[dict, list[dict]]:
    """Parse a VOC annotation with expat so each <object> keeps the line it starts on."""
    header: dict = {}
    objects: list[dict] = []
    stack: list[str] = []
    text: list[str] = []
    parser = xml.parsers.expat.ParserCreate()

    def start(name: str, attrs: dict) -> None:
        stack.append(name)
        text.clear()
        if name == "object":
            objects.append({"line": parser.CurrentLineNumber})

    def end(name: str) -> None:
        value = "".join(text).strip()
        text.clear()
        stack.pop()
        parent = stack[-1] if stack else ""
        if objects and "object" in stack:
            obj = objects[-1]
            if parent == "bndbox":
                obj[name] = value
            elif parent == "object":
                obj[name] = value
        elif parent == "size":
            header[name] = value
        elif parent == "annotation" and name == "filename":
            header["filename"] = value

    parser.StartElementHandler = start
    parser.EndElementHandler = end
    parser.CharacterDataHandler = text.append
    parser.Parse(path.read_bytes(), True)
    return header, objects


def read_voc(root: str | Path, split: str = "train", classes: tuple[str, ...] | None = None) -> LabelSet:
    """Read a Pascal VOC data set (``Annotations/``, ``JPEGImages/``, ``ImageSets/Main/<split>.txt``).

    Parameters
    ----------
    root : path
        The folder holding ``Annotations`` and ``JPEGImages``.
    split : str
        A name in ``ImageSets/Main`` (``train``, ``val``, ``test``, ``trainval``) or ``"all"``.
    classes : tuple of str, optional
        Class names in index order. Default: the names found in the whole data set, in order of
        first appearance over the sorted annotation files — for BCCD, ``("RBC", "WBC", "Platelets")``.
        Objects with other names are reported as unknown classes.
    """
    root = Path(root)
    ann_dir, img_dir = root / "Annotations", root / "JPEGImages"
    if not ann_dir.is_dir():
        raise FileNotFoundError(f"not a Pascal VOC folder: {ann_dir} is missing")
    if split == "all":
        names = sorted(p.stem for p in ann_dir.glob("*.xml"))
    else:
        split_file = root / "ImageSets" / "Main" / f"{split}.txt"
        if not split_file.is_file():
            raise FileNotFoundError(f"no split {split!r}: {split_file} is missing")
        names = split_file.read_text().split()
    if classes is None:
        classes = _voc_class_names(ann_dir)
    index = {c: i for i, c in enumerate(classes)}
    samples, issues = [], []
    for name in names:
        xml_path = ann_dir / f"{name}.xml"
        header, objects = _parse_voc_xml(xml_path)
        image = img_dir / header.get("filename", f"{name}.jpg")
        if not image.is_file():
            image = img_dir / f"{name}.jpg"
        width, height = int(float(header.get("width", 0))), int(float(header.get("height", 0)))
        if width <= 0 or height <= 0:
            import cv2

            im = cv2.imread(str(image), cv2.IMREAD_UNCHANGED)
            if im is None:
                raise FileNotFoundError(f"cannot read image {image} for {xml_path}")
            height, width = im.shape[:2]
        boxes, ids = [], []
        for obj in objects:
            where = (xml_path, obj["line"])
            label = obj.get("name", "")
            if label not in index:
                issues.append(LabelIssue(*where, f"unknown class {label!r} (known: {', '.join(classes)})"))
                continue
            try:
                box = tuple(float(obj[k]) for k in ("xmin", "ymin", "xmax", "ymax"))
            except (KeyError, ValueError) as exc:
                issues.append(LabelIssue(*where, f"bad bndbox: {exc}"))
                continue
            # xmin == xmax is a degenerate label in VOC's 1-based inclusive pixels (BCCD has two)
            problem = _check_box(box, width, height) if box[2] <= box[0] or box[3] <= box[1] else None
            box = (box[0] - 1.0, box[1] - 1.0, box[2], box[3])  # VOC is 1-based, inclusive
            problem = problem or _check_box(box, width, height)
            if problem:
                issues.append(LabelIssue(*where, problem))
                continue
            boxes.append(box)
            ids.append(index[label])
        samples.append(_finish(image, width, height, boxes, ids))
    return LabelSet(tuple(classes), samples, issues, root, split)


def _voc_class_names(ann_dir: Path) -> tuple[str, ...]:
    seen: dict[str, None] = {}
    for path in sorted(ann_dir.glob("*.xml")):
        for obj in _parse_voc_xml(path)[1]:
            if obj.get("name"):
                seen.setdefault(obj["name"], None)
    return tuple(seen)


# -- YOLO txt + data.yaml --------------------------------------------------------------------------
def _read_simple_yaml(path: Path) -> dict:
    """The subset of YAML that data.yaml files use (key: value, names as list or block list/dict).

    PyYAML is used when installed; the fallback keeps the package free of a YAML dependency.
    """
    try:
        import yaml  # type: ignore[import-untyped]

        return yaml.safe_load(path.read_text()) or {}
    except ImportError:
        pass
    data: dict = {}
    key = None
    for raw in path.read_text().splitlines():
        line = raw.split("#", 1)[0].rstrip()
        if not line.strip():
            continue
        if line.startswith((" ", "\t", "-")) and key is not None:
            item = line.strip()
            if item.startswith("-"):
                data.setdefault(key, []).append(item[1:].strip().strip("'\""))
            elif ":" in item:
                k, v = item.split(":", 1)
                if not isinstance(data.get(key), dict):
                    data[key] = {}
                data[key][int(k.strip())] = v.strip().strip("'\"")
            continue
        k, _, v = line.partition(":")
        key, v = k.strip(), v.strip()
        if v.startswith("["):
            data[key] = [s.strip().strip("'\"") for s in v.strip("[]").split(",") if s.strip()]
        elif v:
            data[key] = v.strip("'\"")
    return data


def read_yolo(data_yaml: str | Path, split: str = "train") -> LabelSet:
    """Read a YOLO data set: ``data.yaml`` with ``names`` and ``train/val/test`` image folders or lists.

    Label files sit next to the images with ``images`` replaced by ``labels`` in the path and a
    ``.txt`` suffix; each line is ``class cx cy w h`` normalised to [0, 1].
    """
    import cv2

    data_yaml = Path(data_yaml)
    cfg = _read_simple_yaml(data_yaml)
    names = cfg.get("names")
    if isinstance(names, dict):
        names = [names[i] for i in sorted(names)]
    if not names:
        raise ValueError(f"{data_yaml}: no 'names' list of classes")
    base = Path(cfg.get("path", data_yaml.parent))
    if not base.is_absolute():
        base = data_yaml.parent / base
    if split not in cfg:
        present = ", ".join(k for k in cfg if k in ("train", "val", "test"))
        raise ValueError(f"{data_yaml}: no {split!r} entry (has {present})")
    entries = cfg[split] if isinstance(cfg[split], list) else [cfg[split]]
    images: list[Path] = []
    for entry in entries:
        p = base / entry
        if p.is_dir():
            images += sorted(q for q in p.rglob("*") if q.suffix.lower() in IMAGE_EXTENSIONS)
        elif p.suffix == ".txt":
            images += [base / line.strip() for line in p.read_text().splitlines() if line.strip()]
        else:
            raise FileNotFoundError(f"{data_yaml}: {split} entry {entry!r} is neither a folder nor a list file")
    samples, issues = [], []
    for image in images:
        label = Path(str(image.parent).replace("images", "labels")) / f"{image.stem}.txt"
        im = cv2.imread(str(image), cv2.IMREAD_UNCHANGED)
        if im is None:
            raise FileNotFoundError(f"cannot read image {image}")
        height, width = im.shape[:2]
        boxes, ids = [], []
        lines = label.read_text().splitlines() if label.is_file() else []
        for number, line in enumerate(lines, 1):
            if not line.strip():
                continue
            parts = line.split()
            try:
                cls, cx, cy, w, h = int(parts[0]), *(float(v) for v in parts[1:5])
                if len(parts) != 5:
                    raise ValueError(f"expected 5 values, got {len(parts)}")
            except (ValueError, IndexError) as exc:
                issues.append(LabelIssue(label, number, f"cannot parse {line!r}: {exc}"))
                continue
            if not 0 <= cls < len(names):
                issues.append(LabelIssue(label, number, f"unknown class index {cls} (have {len(names)} classes)"))
                continue
            box = ((cx - w / 2) * width, (cy - h / 2) * height, (cx + w / 2) * width, (cy + h / 2) * height)
            problem = _check_box(box, width, height)
            if problem:
                issues.append(LabelIssue(label, number, problem))
                continue
            boxes.append(box)
            ids.append(cls)
        samples.append(_finish(image, width, height, boxes, ids))
    return LabelSet(tuple(names), samples, issues, base, split)


# -- COCO JSON -------------------------------------------------------------------------------------
def read_coco(annotation_json: str | Path, image_dir: str | Path | None = None, split: str = "") -> LabelSet:
    """Read a COCO detection JSON (``images``, ``annotations`` with ``bbox`` = x, y, w, h; ``categories``).

    Class indices follow the order of ``categories`` sorted by id. The "line" of an issue is the
    index of the annotation in the ``annotations`` list.
    """
    annotation_json = Path(annotation_json)
    data = json.loads(annotation_json.read_text())
    image_dir = Path(image_dir) if image_dir is not None else annotation_json.parent
    cats = sorted(data.get("categories", []), key=lambda c: c["id"])
    names = tuple(c["name"] for c in cats)
    cat_index = {c["id"]: i for i, c in enumerate(cats)}
    per_image: dict[int, tuple[list, list]] = {im["id"]: ([], []) for im in data["images"]}
    issues = []
    for number, ann in enumerate(data.get("annotations", [])):
        if ann.get("category_id") not in cat_index:
            issues.append(LabelIssue(annotation_json, number, f"unknown category_id {ann.get('category_id')!r}"))
            continue
        if ann.get("image_id") not in per_image:
            issues.append(LabelIssue(annotation_json, number, f"unknown image_id {ann.get('image_id')!r}"))
            continue
        x, y, w, h = (float(v) for v in ann["bbox"])
        per_image[ann["image_id"]][0].append((x, y, x + w, y + h, number))
        per_image[ann["image_id"]][1].append(cat_index[ann["category_id"]])
    samples = []
    for im in data["images"]:
        width, height = int(im["width"]), int(im["height"])
        boxes, ids = [], []
        for (x1, y1, x2, y2, number), cls in zip(*per_image[im["id"]]):
            problem = _check_box((x1, y1, x2, y2), width, height)
            if problem:
                issues.append(LabelIssue(annotation_json, number, problem))
                continue
            boxes.append((x1, y1, x2, y2))
            ids.append(cls)
        samples.append(_finish(image_dir / im["file_name"], width, height, boxes, ids))
    return LabelSet(names, samples, issues, image_dir, split)


def load_labels(source: str | Path, split: str = "train", classes: tuple[str, ...] | None = None) -> LabelSet:
    """Read a data set in any supported format, detected from the path.

    ``source`` is a Pascal VOC folder (has ``Annotations/``), a YOLO ``data.yaml`` (or a folder
    holding one), or a COCO ``.json`` file (images beside it).
    """
    source = Path(source)
    if source.is_dir() and (source / "Annotations").is_dir():
        return read_voc(source, split, classes)
    if source.is_dir() and (source / "data.yaml").is_file():
        source = source / "data.yaml"
    if source.suffix in (".yaml", ".yml"):
        return read_yolo(source, split)
    if source.suffix == ".json":
        return read_coco(source, split=split)
    raise ValueError(
        f"cannot tell the format of {source}: expected a Pascal VOC folder (with Annotations/), "
        "a YOLO data.yaml, or a COCO .json file"
    )
