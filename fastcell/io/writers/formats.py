"""One :class:`~fastcell.results.Result` → the content of each annotation format (no file I/O here).

Coordinate conventions, shared by every format:

* ``Result.boxes`` are continuous pixel coordinates: pixel ``(col, row)`` covers
  ``[col, col + 1) × [row, row + 1)``, so a box around pixels 10..19 is ``x1 = 10, x2 = 20``.
* YOLO: ``class cx cy w h`` normalised by the image width/height, each in [0, 1], 6 decimals.
* COCO: ``bbox = [x1, y1, x2 - x1, y2 - y1]`` in the same continuous pixels; masks as RLE
  (exact) or polygons through pixel centres (``col + 0.5, row + 0.5``; approximate).
* File names in every text format (COCO ``file_name``, CSV ``image``, VOC ``filename``, ``folder``
  and ``path``) go through :func:`fastcell.io._names.text_name`: a name that is not valid UTF-8,
  or holds a backslash or a control character, is written with those bytes as ``\\xHH`` and
  backslashes doubled, so every file is valid UTF-8 and the name can be recovered exactly.
* Pascal VOC: integer, 1-based and inclusive, as the VOC devkit reads them: ``xmin = round(x1) + 1``
  (the first covered pixel, counted from 1) and ``xmax = round(x2)`` (the last covered pixel), so
  ``x1 ≈ xmin - 1`` and ``x2 ≈ xmax`` within half a pixel.
"""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from typing import Any

import cv2
import numpy as np

from fastcell.io._names import text_name
from fastcell.ops import coco_rle
from fastcell.results import Result

__all__ = [
    "MAX_LABEL",
    "CSV_HEADER",
    "yolo_text",
    "yolo_classes",
    "voc_box",
    "voc_xml",
    "coco_image",
    "coco_annotations",
    "coco_categories",
    "mask_runs",
    "csv_rows",
    "label_image",
    "display_image",
    "overlay_image",
    "encode_image",
    "IMAGE_FORMATS",
]

#: The largest instance id a 16-bit label image can hold.
MAX_LABEL = 65535
CSV_HEADER = ("image", "index", "class_id", "class", "score", "x1", "y1", "x2", "y2", "area")
#: image format name → (file suffix, OpenCV encoder parameters)
IMAGE_FORMATS: dict[str, tuple[str, list[int]]] = {
    "png": (".png", []),
    "jpg": (".jpg", [cv2.IMWRITE_JPEG_QUALITY, 95]),
    "tif": (".tif", []),
}

# Class colours (BGR) for overlays: distinct, readable on pink/purple smears; cycled past 8 classes.
_PALETTE = np.array(
    [(0, 0, 230), (230, 120, 0), (0, 200, 0), (0, 200, 230), (200, 0, 200), (230, 230, 0), (0, 128, 255), (128, 0, 128)],
    dtype=np.uint8,
)


def _size(result: Result) -> tuple[int, int]:
    """(height, width) of the frame, with a clear error when the result cannot tell."""
    try:
        return tuple(int(v) for v in result.shape)  # type: ignore[return-value]
    except ValueError as exc:
        raise ValueError(f"cannot write annotations: {exc} (the frame size is unknown)") from None


def _fmt(value: float, decimals: int) -> str:
    """Fixed decimals without a negative zero, so equal values always print the same."""
    text = f"{value:.{decimals}f}"
    return text[1:] if text.startswith("-") and float(text) == 0 else text


# -- YOLO --------------------------------------------------------------------------------------------
def yolo_text(result: Result, with_scores: bool = False) -> str:
    """YOLO txt content: one ``class cx cy w h`` line per cell; ``""`` when there are none.

    Parameters
    ----------
    result : Result
    with_scores : bool
        Append the score as a sixth column (the format of YOLO prediction files); plain
        training labels have five columns.
    """
    height, width = _size(result)
    lines = []
    for box, score, cls in zip(result.boxes, result.scores, result.class_ids):
        x1, y1, x2, y2 = (float(v) for v in box)
        values = np.clip([(x1 + x2) / 2 / width, (y1 + y2) / 2 / height, (x2 - x1) / width, (y2 - y1) / height], 0, 1)
        line = f"{int(cls)} " + " ".join(_fmt(v, 6) for v in values)
        if with_scores:
            line += f" {_fmt(float(score), 6)}"
        lines.append(line)
    return "".join(line + "\n" for line in lines)


def yolo_classes(classes: tuple[str, ...]) -> tuple[str, str]:
    """``classes.txt`` (one name per line) and an Ultralytics-style ``data.yaml`` naming the classes."""
    # JSON strings are valid YAML scalars: names with ':' or quotes stay safe.
    yaml = ["# classes of the YOLO labels in this folder (written by fastcell annotate)", f"nc: {len(classes)}", "names:"]
    yaml += [f"  {i}: {json.dumps(name)}" for i, name in enumerate(classes)]
    return "".join(f"{name}\n" for name in classes), "\n".join(yaml) + "\n"


# -- Pascal VOC --------------------------------------------------------------------------------------
def _depth(result: Result) -> int:
    image = result.image if result.image is not None else result.segmented
    if image is None:
        return 3
    return 1 if image.ndim == 2 else int(image.shape[2])


def voc_box(box: np.ndarray, width: int, height: int) -> tuple[int, int, int, int]:
    """``(xmin, ymin, xmax, ymax)`` 1-based inclusive for a continuous box (see the module notes)."""
    x1, y1, x2, y2 = (float(v) for v in box)
    xmin = min(max(int(round(x1)) + 1, 1), width)
    ymin = min(max(int(round(y1)) + 1, 1), height)
    xmax = min(max(int(round(x2)), xmin), width)  # at least one pixel wide
    ymax = min(max(int(round(y2)), ymin), height)
    return xmin, ymin, xmax, ymax


def voc_xml(result: Result, filename: str, folder: str = "", path: str | None = None) -> bytes:
    """Pascal VOC annotation XML in BCCD's layout (folder, filename, size, object/name/bndbox).

    Each object also carries ``<score>``; VOC readers ignore elements they do not know.
    ``truncated`` is 1 when the box touches the frame border (the cell is cut by it).
    """
    height, width = _size(result)
    root = ET.Element("annotation")
    ET.SubElement(root, "folder").text = text_name(folder)
    ET.SubElement(root, "filename").text = text_name(filename)
    if path is not None:
        ET.SubElement(root, "path").text = text_name(path)
    ET.SubElement(ET.SubElement(root, "source"), "database").text = "fastcell"
    size = ET.SubElement(root, "size")
    for tag, value in (("width", width), ("height", height), ("depth", _depth(result))):
        ET.SubElement(size, tag).text = str(value)
    ET.SubElement(root, "segmented").text = "0"
    for box, score, name in zip(result.boxes, result.scores, result.class_names):
        xmin, ymin, xmax, ymax = voc_box(box, width, height)
        obj = ET.SubElement(root, "object")
        ET.SubElement(obj, "name").text = name
        ET.SubElement(obj, "pose").text = "Unspecified"
        touches = xmin == 1 or ymin == 1 or xmax == width or ymax == height
        ET.SubElement(obj, "truncated").text = str(int(touches))
        ET.SubElement(obj, "difficult").text = "0"
        ET.SubElement(obj, "score").text = _fmt(float(score), 4)
        bndbox = ET.SubElement(obj, "bndbox")
        for tag, value in zip(("xmin", "ymin", "xmax", "ymax"), (xmin, ymin, xmax, ymax)):
            ET.SubElement(bndbox, tag).text = str(value)
    ET.indent(root, space="\t")
    return ET.tostring(root, encoding="utf-8") + b"\n"


# -- COCO --------------------------------------------------------------------------------------------
def coco_image(result: Result, file_name: str, frame_index: int | None = None) -> dict[str, Any]:
    """The COCO ``images`` entry of a frame, without its ``id`` (assigned when files are merged).

    ``frame_index`` (a video frame's position) is added as an extra field when given.
    """
    height, width = _size(result)
    entry: dict[str, Any] = {"file_name": text_name(file_name), "width": width, "height": height}
    if frame_index is not None:
        entry["frame_index"] = int(frame_index)
    return entry


def mask_runs(result: Result) -> list[tuple[str, int]] | None:
    """Each detection's mask as pycocotools' compressed RLE string and its pixel area (``None``
    without labels).

    Computed in one compiled pass over the label image (:func:`fastcell.ops.coco_rle`);
    :func:`coco_annotations` and :func:`csv_rows` take it so a writer that needs both computes it
    once.
    """
    if result.labels is None:
        return None
    counts, areas = coco_rle(result.labels, len(result))
    return list(zip(counts, areas.tolist()))


def _polygon(points: np.ndarray) -> list[float]:
    """A contour through pixel indices → a COCO polygon through the pixel centres (>= 3 points)."""
    if len(points) >= 3:
        return [round(float(v) + 0.5, 2) for v in points.reshape(-1)]
    # One or two pixels (a dot or a short line): the outline of the pixels' bounding square.
    x0, y0 = points.min(axis=0)
    x1, y1 = points.max(axis=0) + 1
    return [float(v) for v in (x0, y0, x1, y0, x1, y1, x0, y1)]


def coco_annotations(result: Result, segmentation: str = "rle",
                     runs: list[tuple[str, int]] | None = None) -> list[dict[str, Any]]:
    """COCO ``annotations`` of a frame, without ``id``/``image_id`` (assigned when files are merged).

    Parameters
    ----------
    result : Result
    segmentation : {"rle", "polygon", "none"}
        ``"rle"``: pycocotools' compressed RLE of each instance mask, which decodes to exactly
        ``result.labels == i + 1``. ``"polygon"``: the outer contour of each mask
        (:meth:`Result.polygons`), an approximation that tools without RLE support can read; a
        mask with no pixels left is written as an empty RLE. ``"none"`` or a result without
        labels: boxes only.
    runs : list, optional
        :func:`mask_runs` of ``result``, if already computed.

    Returns
    -------
    list of dict
        ``category_id`` (class index + 1, as COCO ids start at 1), ``bbox`` ``[x, y, w, h]``,
        ``area`` (mask pixels; box area without masks), ``iscrowd`` 0, ``score`` and, with masks,
        ``segmentation``.
    """
    if segmentation not in ("rle", "polygon", "none"):
        raise ValueError(f"segmentation must be 'rle', 'polygon' or 'none', got {segmentation!r}")
    height, width = _size(result)
    with_masks = segmentation != "none" and result.labels is not None
    if with_masks:
        runs = mask_runs(result) if runs is None else runs
        polygons = result.polygons() if segmentation == "polygon" else None
        # Polygons replace RLE where there is a contour; RLE strings only for the rest.
        need_rle = [i for i in range(len(result)) if polygons is None or not len(polygons[i])]
        rle = {i: runs[i][0] for i in need_rle}
    anns = []
    for i, (box, score, cls) in enumerate(zip(result.boxes, result.scores, result.class_ids)):
        x1, y1, x2, y2 = (float(v) for v in box)
        ann: dict[str, Any] = {
            "category_id": int(cls) + 1,
            "bbox": [round(x1, 2), round(y1, 2), round(x2 - x1, 2), round(y2 - y1, 2)],
            "area": round((x2 - x1) * (y2 - y1), 2),
            "iscrowd": 0,
            "score": round(float(score), 5),
        }
        if with_masks:
            ann["area"] = runs[i][1]
            if i in rle:
                ann["segmentation"] = {"size": [height, width], "counts": rle[i]}
            else:
                ann["segmentation"] = [_polygon(polygons[i])]
        anns.append(ann)
    return anns


def coco_categories(classes: tuple[str, ...]) -> list[dict[str, Any]]:
    return [{"id": i + 1, "name": name, "supercategory": "cell"} for i, name in enumerate(classes)]


# -- CSV ---------------------------------------------------------------------------------------------
def csv_rows(result: Result, image_name: str, runs: list[tuple[str, int]] | None = None) -> list[list[str]]:
    """One row per cell, columns :data:`CSV_HEADER`; ``area`` is the mask's pixel count ("" without masks).

    ``runs``: :func:`mask_runs` of ``result``, if already computed.
    """
    if result.labels is not None and runs is None:
        runs = mask_runs(result)
    rows = []
    image_name = text_name(image_name)
    for i, (box, score, cls, name) in enumerate(zip(result.boxes, result.scores, result.class_ids, result.class_names)):
        coords = [_fmt(float(v), 2) for v in box]
        area = str(runs[i][1]) if runs is not None else ""
        rows.append([image_name, str(i), str(int(cls)), name, _fmt(float(score), 5), *coords, area])
    return rows


# -- images ------------------------------------------------------------------------------------------
def label_image(result: Result) -> np.ndarray:
    """The instance label image as uint16 (0 background, i + 1 = detection i).

    Raises
    ------
    ValueError
        Without labels, or with more than 65535 instances (a 16-bit image cannot hold them).
    """
    if result.labels is None:
        raise ValueError("this result has no instance label image (segmentation was switched off)")
    if len(result) > MAX_LABEL:
        raise ValueError(
            f"{len(result)} cells in one frame: a 16-bit label image holds at most {MAX_LABEL}; "
            "lower max_detections or write another format"
        )
    return result.labels.astype(np.uint16)


def display_image(image: np.ndarray) -> np.ndarray:
    """8-bit BGR view of a frame as given: grey → BGR, BGRA → BGR, 16-bit stretched min..max."""
    if image.dtype != np.uint8:
        lo, hi = float(image.min()), float(image.max())
        image = ((image.astype(np.float32) - lo) * (255.0 / max(hi - lo, 1.0)) + 0.5).astype(np.uint8)
    if image.ndim == 2 or image.shape[2] == 1:
        return cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)
    if image.shape[2] == 4:
        return cv2.cvtColor(image, cv2.COLOR_BGRA2BGR)
    return image.copy()


def overlay_image(result: Result) -> np.ndarray:
    """The frame with each cell's mask outline, box and ``class score`` label in its class colour."""
    base = result.image if result.image is not None else result.segmented
    if base is None:
        raise ValueError("this result keeps neither the image nor the segmented image to draw on")
    canvas = display_image(base)
    colours = _PALETTE[result.class_ids % len(_PALETTE)] if len(result) else np.zeros((0, 3), np.uint8)
    if result.labels is not None and len(result):
        labels = result.labels
        # Outline = a labelled pixel whose right or lower neighbour carries another label.
        edge = np.zeros(labels.shape, bool)
        edge[:, :-1] |= labels[:, :-1] != labels[:, 1:]
        edge[:-1, :] |= labels[:-1, :] != labels[1:, :]
        edge &= labels > 0
        lut = np.concatenate([np.zeros((1, 3), np.uint8), colours])
        canvas[edge] = lut[labels[edge]]
    thickness = max(1, round(max(canvas.shape[:2]) / 400))
    scale = max(0.35, max(canvas.shape[:2]) / 1400)
    for box, score, name, colour in zip(result.boxes, result.scores, result.class_names, colours):
        x1, y1, x2, y2 = (int(round(float(v))) for v in box)
        bgr = tuple(int(c) for c in colour)
        cv2.rectangle(canvas, (x1, y1), (x2, y2), bgr, thickness)
        text = f"{name} {float(score):.2f}"
        (tw, th), base_line = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, 1)
        ty = y1 - 2 if y1 - th - base_line - 2 >= 0 else y1 + th + 2
        cv2.rectangle(canvas, (x1, ty - th - 2), (x1 + tw + 2, ty + base_line - 1), bgr, -1)
        cv2.putText(canvas, text, (x1 + 1, ty - 1), cv2.FONT_HERSHEY_SIMPLEX, scale, (255, 255, 255), 1, cv2.LINE_AA)
    return canvas


def encode_image(image: np.ndarray, fmt: str) -> bytes:
    """Encode an image in one of :data:`IMAGE_FORMATS` (``png`` and ``tif`` keep 16-bit data)."""
    if fmt not in IMAGE_FORMATS:
        raise ValueError(f"image format must be one of {sorted(IMAGE_FORMATS)}, got {fmt!r}")
    suffix, params = IMAGE_FORMATS[fmt]
    if fmt == "jpg" and image.dtype != np.uint8:
        raise ValueError(f"JPEG holds 8-bit images only, got {image.dtype}; write png or tif")
    ok, buffer = cv2.imencode(suffix, image, params)
    if not ok:
        raise ValueError(f"OpenCV could not encode a {image.dtype} image of shape {image.shape} as {fmt}")
    return buffer.tobytes()
