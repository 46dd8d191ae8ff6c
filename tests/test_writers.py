"""Annotation writers: every format read back with an independent reader.

Results are built by hand from real BCCD images and their ground-truth boxes (ellipse masks, the
higher score winning where they overlap, as the Annotator does), so these tests need no model.
Readers: pycocotools (COCO, incl. mask decoding), xml.etree (VOC), the YOLO format's rules, the
csv module, and cv2.imread(IMREAD_UNCHANGED) for label images.
"""

from __future__ import annotations

import copy
import csv
import json
import xml.etree.ElementTree as ET
from pathlib import Path

import cv2
import numpy as np
import pytest

from fastcell import ops
from fastcell.io.writers import (
    COCO_FILE,
    CSV_FILE,
    FORMATS,
    AnnotationWriter,
    Item,
    SettingsMismatch,
    encode_mask,
    formats,
)
from fastcell.io.writers._rle import compress_many, instance_counts
from fastcell.results import Result

CLASSES = ("RBC", "WBC", "Platelets")

# pycocotools' compiled decoder (2.0.x) trips NumPy 2's __array__(copy=...) deprecation; that is
# pycocotools' bug, not ours, and it is the only warning let through.
pytestmark = pytest.mark.filterwarnings(
    "ignore:__array__ implementation doesn't accept a copy keyword:DeprecationWarning"
)


# -- building results ------------------------------------------------------------------------------
def make_result(image: np.ndarray | None, boxes, class_ids, shape=None, classes=CLASSES, seed=0) -> Result:
    """A Result with elliptic masks inside the boxes; scores descend, so detection 0 wins overlaps."""
    boxes = np.asarray(boxes, np.float32).reshape(-1, 4)
    n = len(boxes)
    height, width = shape if shape is not None else image.shape[:2]
    scores = np.sort(np.random.default_rng(seed).uniform(0.3, 0.99, n))[::-1].astype(np.float32)
    labels = np.zeros((height, width), np.int32)
    for i in reversed(range(n)):  # lower scores first, higher ones paint over them
        x1, y1, x2, y2 = (float(v) for v in boxes[i])
        axes = (max(x2 - x1, 1.0), max(y2 - y1, 1.0))
        cv2.ellipse(labels, (((x1 + x2) / 2, (y1 + y2) / 2), axes, 0), i + 1, -1)
    segmented = None
    if image is not None:
        view = formats.display_image(image)
        segmented = np.where(labels[..., None] > 0, view, 0).astype(np.uint8)
    return Result(boxes, scores, np.asarray(class_ids, np.int32).reshape(-1), tuple(classes), labels, segmented, image)


def bccd_result(image_path: Path) -> Result:
    """A BCCD image with its ground-truth boxes (VOC 1-based → continuous pixels)."""
    root = ET.parse(image_path.parent.parent / "Annotations" / f"{image_path.stem}.xml").getroot()
    boxes, ids = [], []
    for obj in root.iter("object"):
        b = obj.find("bndbox")
        x1, y1, x2, y2 = (float(b.find(t).text) for t in ("xmin", "ymin", "xmax", "ymax"))
        if x2 > x1 and y2 > y1:
            boxes.append([x1 - 1, y1 - 1, x2, y2])
            ids.append(CLASSES.index(obj.find("name").text.strip()))
    image = cv2.imread(str(image_path), cv2.IMREAD_UNCHANGED)
    return make_result(image, boxes, ids, seed=len(boxes))


@pytest.fixture(scope="module")
def bccd_results(bccd_images) -> list[tuple[Item, Result]]:
    return [(Item(p.stem, p.name, "jpg"), bccd_result(p)) for p in bccd_images[:4]]


def empty_result(shape=(48, 64)) -> Result:
    image = np.full((*shape, 3), 200, np.uint8)
    return make_result(image, np.zeros((0, 4)), [])


def write_folder(out: Path, pairs, fmts=FORMATS, **options) -> None:
    with AnnotationWriter(out, CLASSES, fmts, **options) as writer:
        for item, result in pairs:
            writer.submit(result, item)
        writer.finish([item for item, _ in pairs])


def read_tree(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


# -- RLE against pycocotools -----------------------------------------------------------------------
@pytest.mark.parametrize("seed", range(4))
def test_rle_matches_pycocotools(seed):
    mask_util = pytest.importorskip("pycocotools.mask")
    rng = np.random.default_rng(seed)
    for _ in range(200):
        h, w = rng.integers(1, 70, 2)
        mask = rng.random((h, w)) < rng.random()
        if rng.random() < 0.3:  # solid blocks, incl. ones touching the first/last pixel
            mask[:] = False
            y, x = rng.integers(0, [h, w])
            mask[y:, x:] = True
        reference = mask_util.encode(np.asfortranarray(mask.astype(np.uint8)))
        ours = encode_mask(mask)
        assert ours["counts"] == reference["counts"].decode()
        assert ours["size"] == [h, w]
        assert np.array_equal(mask_util.decode(ours), mask)
        uncompressed = mask_util.frPyObjects(encode_mask(mask, compressed=False), int(h), int(w))
        assert np.array_equal(mask_util.decode(uncompressed), mask)


@pytest.mark.parametrize("seed", range(3))
def test_instance_counts_of_a_label_image_match_pycocotools(seed):
    """All instances of a label image in one pass (and one batched compression) equal per-mask RLE."""
    mask_util = pytest.importorskip("pycocotools.mask")
    rng = np.random.default_rng(seed)
    for _ in range(100):
        h, w = rng.integers(1, 60, 2)
        n = int(rng.integers(0, 7))
        labels = np.zeros((h, w), np.int32)
        for value in range(1, n + 1):  # overlapping blocks: later ones cut earlier ones apart
            y, x = rng.integers(0, [h, w])
            labels[y:y + rng.integers(1, 30), x:x + rng.integers(1, 30)] = value
        runs = instance_counts(labels, n)
        strings = compress_many([counts for counts, _ in runs])
        for i in range(n):
            mask = labels == i + 1
            assert runs[i][1] == mask.sum()
            assert strings[i] == mask_util.encode(np.asfortranarray(mask.astype(np.uint8)))["counts"].decode()


@pytest.mark.parametrize("seed", range(3))
def test_compiled_coco_rle_equals_pycocotools_and_the_numpy_twin(seed):
    """fastcell.ops.coco_rle (what the writers use) against pycocotools and instance_counts."""
    mask_util = pytest.importorskip("pycocotools.mask")
    rng = np.random.default_rng(100 + seed)
    for trial in range(150):
        h, w = (int(v) for v in rng.integers(1, 60, 2))
        n = int(rng.integers(0, 7))
        labels = np.zeros((h, w), np.int32)
        for value in range(1, n + 3):  # values n+1, n+2 exist but lie outside 1..n: background
            y, x = rng.integers(0, [h, w])
            labels[y:y + rng.integers(1, 30), x:x + rng.integers(1, 30)] = value
        if trial % 4 == 0:
            labels[0, 0] = labels[-1, -1] = 1 if n else 0  # runs at the first and the last pixel
        if trial % 5 == 0:
            labels = labels[::-1, ::2]  # a strided, flipped view
        if trial % 7 == 0:
            labels = labels.astype(np.uint16)
        strings, areas = ops.coco_rle(labels, n)
        assert len(strings) == n and areas.dtype == np.int64
        reference = instance_counts(np.asarray(labels, np.int64), n)
        assert strings == compress_many([counts for counts, _ in reference])
        for i in range(n):
            mask = labels == i + 1
            assert areas[i] == mask.sum()
            assert strings[i] == mask_util.encode(np.asfortranarray(mask.astype(np.uint8)))["counts"].decode()


def test_compiled_coco_rle_edge_cases_and_bad_input():
    empty, areas = ops.coco_rle(np.zeros((4, 5), np.int32), 2)
    assert empty == [compress_many([[20]])[0]] * 2 and areas.tolist() == [0, 0]
    assert ops.coco_rle(np.zeros((0, 5), np.int32), 1)[0] == [compress_many([[0]])[0]]
    strings, areas = ops.coco_rle(np.ones((3, 3), np.int32), 0)
    assert strings == [] and areas.shape == (0,)
    with pytest.raises(TypeError, match="integer"):
        ops.coco_rle(np.zeros((3, 3), np.float32), 1)
    with pytest.raises(ValueError, match=r"\(H, W\) int32"):
        ops.coco_rle(np.zeros((3, 3, 1), np.int32), 1)
    with pytest.raises(ValueError, match="int32"):
        ops.coco_rle(np.array([[2**40]], np.int64), 1)
    with pytest.raises(ValueError, match=">= 0"):
        ops.coco_rle(np.zeros((3, 3), np.int32), -1)


def test_rle_large_counts_and_negative_deltas():
    mask_util = pytest.importorskip("pycocotools.mask")
    mask = np.zeros((2000, 3000), bool)
    mask[1500:, 2900:] = True  # one long background run, then short ones: negative deltas
    mask[0, 0] = True
    mask[5, 1] = True
    assert encode_mask(mask)["counts"] == mask_util.encode(np.asfortranarray(mask.astype(np.uint8)))["counts"].decode()


# -- YOLO ------------------------------------------------------------------------------------------
def parse_yolo(text: str, n_classes: int, columns: int = 5) -> np.ndarray:
    rows = []
    for line in text.splitlines():
        parts = line.split()
        assert len(parts) == columns, line
        assert parts[0].isdigit() and int(parts[0]) < n_classes
        values = [float(v) for v in parts[1:]]
        assert all(0.0 <= v <= 1.0 for v in values), line
        rows.append([int(parts[0]), *values])
    return np.array(rows, float).reshape(-1, columns)


def test_yolo_follows_the_format_and_round_trips(tmp_path, bccd_results):
    write_folder(tmp_path, bccd_results, ("yolo",))
    assert (tmp_path / "yolo" / "classes.txt").read_text().splitlines() == list(CLASSES)
    yaml = (tmp_path / "yolo" / "data.yaml").read_text()
    assert "nc: 3" in yaml and '0: "RBC"' in yaml and '2: "Platelets"' in yaml
    for item, result in bccd_results:
        rows = parse_yolo((tmp_path / "yolo" / f"{item.key}.txt").read_text(), len(CLASSES))
        h, w = result.shape
        assert np.array_equal(rows[:, 0], result.class_ids)
        cx, cy, bw, bh = rows[:, 1] * w, rows[:, 2] * h, rows[:, 3] * w, rows[:, 4] * h
        back = np.stack([cx - bw / 2, cy - bh / 2, cx + bw / 2, cy + bh / 2], 1)
        assert np.abs(back - result.boxes).max() < 1e-3 * w  # 6 decimals of a 640 px frame


def test_yolo_scores_column_and_empty_file(tmp_path):
    image = np.zeros((100, 200, 3), np.uint8)
    result = make_result(image, [[10, 20, 60, 80], [100, 0, 200, 100]], [2, 0])
    rows = parse_yolo(formats.yolo_text(result, with_scores=True), 3, columns=6)
    assert np.allclose(rows[:, 5], result.scores, atol=1e-6)
    assert np.allclose(rows[0, 1:5], [35 / 200, 50 / 100, 50 / 200, 60 / 100])
    write_folder(tmp_path, [(Item("none", "none.png"), empty_result())], ("yolo",))
    assert (tmp_path / "yolo" / "none.txt").read_bytes() == b""


# -- COCO ------------------------------------------------------------------------------------------
def test_coco_loads_in_pycocotools_and_masks_equal_the_labels(tmp_path, bccd_results):
    coco_mod = pytest.importorskip("pycocotools.coco")
    pairs = [*bccd_results, (Item("empty", "empty.png"), empty_result())]
    write_folder(tmp_path, pairs, ("coco",))
    gt = coco_mod.COCO(str(tmp_path / COCO_FILE))
    assert [c["name"] for c in gt.loadCats(gt.getCatIds())] == list(CLASSES)
    assert [img["file_name"] for img in gt.loadImgs(gt.getImgIds())] == [item.name for item, _ in pairs]
    document = json.loads((tmp_path / COCO_FILE).read_text())
    detections = gt.loadRes(copy.deepcopy(document["annotations"]))  # loadRes edits its input
    for image_id, (item, result) in enumerate(pairs, start=1):
        for coco in (gt, detections):
            anns = coco.loadAnns(coco.getAnnIds(imgIds=[image_id]))
            assert len(anns) == len(result)
            decoded = np.zeros(result.shape, np.int32)
            for i, ann in enumerate(sorted(anns, key=lambda a: a["id"])):
                mask = coco.annToMask(ann).astype(bool)
                assert np.array_equal(mask, result.labels == i + 1), (item.key, i)
                decoded[mask] = i + 1
                x, y, w, h = ann["bbox"]
                assert np.allclose([x, y, x + w, y + h], result.boxes[i], atol=0.006)
                assert ann["category_id"] - 1 == result.class_ids[i]
                assert ann["score"] == pytest.approx(float(result.scores[i]), abs=1e-5)
            assert np.array_equal(decoded, result.labels)
        image_anns = [a for a in document["annotations"] if a["image_id"] == image_id]
        assert [a["area"] for a in image_anns] == [int((result.labels == i + 1).sum()) for i in range(len(result))]


def test_coco_file_scores_itself_perfectly(tmp_path, bccd_results, capsys):
    """Evaluated against itself, a well-formed file gives mask AP 1.0 (pycocotools' COCOeval)."""
    coco_mod = pytest.importorskip("pycocotools.coco")
    cocoeval = pytest.importorskip("pycocotools.cocoeval")
    write_folder(tmp_path, bccd_results, ("coco",))
    gt = coco_mod.COCO(str(tmp_path / COCO_FILE))
    dt = gt.loadRes(json.loads((tmp_path / COCO_FILE).read_text())["annotations"])
    evaluation = cocoeval.COCOeval(gt, dt, "segm")
    evaluation.evaluate()
    evaluation.accumulate()
    evaluation.summarize()
    assert evaluation.stats[1] == pytest.approx(1.0)  # AP at IoU 0.5


def test_coco_polygons_approximate_the_masks(tmp_path, bccd_results):
    coco_mod = pytest.importorskip("pycocotools.coco")
    write_folder(tmp_path, bccd_results[:2], ("coco",), coco_segmentation="polygon")
    gt = coco_mod.COCO(str(tmp_path / COCO_FILE))
    for image_id, (_, result) in enumerate(bccd_results[:2], start=1):
        anns = sorted(gt.loadAnns(gt.getAnnIds(imgIds=[image_id])), key=lambda a: a["id"])
        for i, ann in enumerate(anns):
            truth = result.labels == i + 1
            if truth.sum() < 400:  # tiny or mostly hidden masks: polygons are coarse there
                continue
            mask = gt.annToMask(ann).astype(bool)
            iou = (mask & truth).sum() / (mask | truth).sum()
            assert iou > 0.9, (image_id, i, iou)


def test_coco_without_masks_and_empty_frames(tmp_path):
    coco_mod = pytest.importorskip("pycocotools.coco")
    image = np.zeros((60, 80, 3), np.uint8)
    boxed = make_result(image, [[5, 5, 25, 35]], [1])
    boxed.labels = None  # segmentation switched off
    write_folder(tmp_path, [(Item("a", "a.png"), boxed), (Item("b", "b.png"), empty_result())], ("coco",))
    gt = coco_mod.COCO(str(tmp_path / COCO_FILE))
    assert len(gt.getImgIds()) == 2 and len(gt.getAnnIds()) == 1
    ann = gt.loadAnns(gt.getAnnIds())[0]
    assert "segmentation" not in ann and ann["bbox"] == [5.0, 5.0, 20.0, 30.0] and ann["area"] == 600.0


# -- Pascal VOC ------------------------------------------------------------------------------------
def test_voc_xml_reads_back_in_bccd_layout(tmp_path, bccd_results):
    write_folder(tmp_path, bccd_results, ("voc",))
    for item, result in bccd_results:
        root = ET.parse(tmp_path / "voc" / f"{item.key}.xml").getroot()
        assert root.tag == "annotation" and root.findtext("filename") == item.name
        h, w = result.shape
        size = root.find("size")
        assert (int(size.findtext("width")), int(size.findtext("height")), int(size.findtext("depth"))) == (w, h, 3)
        objects = root.findall("object")
        assert [o.findtext("name") for o in objects] == result.class_names
        for obj, box in zip(objects, result.boxes):
            b = obj.find("bndbox")
            xmin, ymin, xmax, ymax = (int(b.findtext(t)) for t in ("xmin", "ymin", "xmax", "ymax"))
            assert 1 <= xmin <= xmax <= w and 1 <= ymin <= ymax <= h
            assert np.abs(np.array([xmin - 1, ymin - 1, xmax, ymax]) - box).max() <= 0.5


def test_voc_depth_of_gray_and_rgba(tmp_path):
    for image, depth in ((np.zeros((30, 40), np.uint8), 1), (np.zeros((30, 40, 4), np.uint8), 4)):
        root = ET.fromstring(formats.voc_xml(make_result(image, [[0, 0, 10, 10]], [0]), "x.png"))
        assert root.find("size").findtext("depth") == str(depth)
        assert root.find("object").findtext("truncated") == "1"  # touches the border


# -- CSV -------------------------------------------------------------------------------------------
def test_csv_one_row_per_cell(tmp_path, bccd_results):
    pairs = [*bccd_results, (Item("empty", "empty.png"), empty_result())]
    write_folder(tmp_path, pairs, ("csv",))
    with open(tmp_path / CSV_FILE, newline="") as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == list(formats.CSV_HEADER)
    assert len(rows) == sum(len(r) for _, r in pairs)
    at = 0
    for item, result in bccd_results:
        for i in range(len(result)):
            row = rows[at + i]
            assert row["image"] == item.name and int(row["index"]) == i
            assert row["class"] == result.class_names[i] and int(row["class_id"]) == result.class_ids[i]
            coords = [float(row[k]) for k in ("x1", "y1", "x2", "y2")]
            assert np.allclose(coords, result.boxes[i], atol=0.006)
            assert int(row["area"]) == int((result.labels == i + 1).sum())
        at += len(result)


# -- images ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("label_format", ["png", "tif"])
def test_label_images_are_16_bit_and_exact(tmp_path, bccd_results, label_format):
    write_folder(tmp_path, bccd_results, ("labels",), label_format=label_format)
    for item, result in bccd_results:
        back = cv2.imread(str(tmp_path / "labels" / f"{item.key}.{label_format}"), cv2.IMREAD_UNCHANGED)
        assert back.dtype == np.uint16 and np.array_equal(back, result.labels)


def test_label_image_refuses_more_than_65535_cells():
    n = 65536
    boxes = np.zeros((n, 4), np.float32)
    result = Result(boxes, np.zeros(n, np.float32), np.zeros(n, np.int32), CLASSES, np.zeros((4, 4), np.int32))
    with pytest.raises(ValueError, match="65535"):
        formats.label_image(result)


def test_segmented_images_and_format_choice(tmp_path, bccd_results):
    png_item = Item("as_png", "as_png.png", None)
    pairs = [*bccd_results[:1], (png_item, bccd_results[0][1])]
    write_folder(tmp_path, pairs, ("segmented",))
    result = bccd_results[0][1]
    lossless = cv2.imread(str(tmp_path / "segmented" / "as_png.png"), cv2.IMREAD_UNCHANGED)
    assert np.array_equal(lossless, result.segmented)
    lossy = cv2.imread(str(tmp_path / "segmented" / f"{bccd_results[0][0].key}.jpg"), cv2.IMREAD_UNCHANGED)
    assert lossy.shape == result.segmented.shape
    assert cv2.PSNR(lossy, result.segmented) > 30


@pytest.mark.parametrize("kind", ["bgr", "gray", "rgba", "uint16"])
def test_overlays_and_crops_of_every_image_kind(tmp_path, kind):
    rng = np.random.default_rng(1)
    base = rng.integers(0, 256, (90, 120, 3)).astype(np.uint8)
    image = {
        "bgr": base,
        "gray": base[..., 0].copy(),
        "rgba": np.dstack([base, np.full(base.shape[:2], 255, np.uint8)]),
        "uint16": base[..., 0].astype(np.uint16) * 200,
    }[kind]
    result = make_result(image, [[10, 10, 50, 60], [60, 20, 119.5, 89.5]], [1, 0])
    write_folder(tmp_path, [(Item("f", "f.png"), result)], ("overlay", "crops"))
    overlay = cv2.imread(str(tmp_path / "overlays" / "f.png"), cv2.IMREAD_UNCHANGED)
    assert overlay.shape == (90, 120, 3) and overlay.dtype == np.uint8
    # The box of detection 0 is drawn in its class colour (WBC: palette entry 1).
    assert tuple(overlay[35, 10]) == tuple(int(c) for c in formats._PALETTE[1])
    crops = sorted((tmp_path / "crops" / "f").iterdir())
    assert [p.name for p in crops] == ["0000_WBC.png", "0001_RBC.png"]
    for path, (x1, y1, x2, y2) in zip(crops, [(10, 10, 50, 60), (60, 20, 120, 90)]):
        crop = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
        assert crop.dtype == image.dtype and np.array_equal(crop, image[y1:y2, x1:x2])


def test_masked_crops_come_from_the_segmented_image(tmp_path):
    image = np.full((40, 40, 3), 180, np.uint8)
    result = make_result(image, [[5, 5, 35, 35]], [0])
    write_folder(tmp_path, [(Item("m", "m.png"), result)], ("crops",), crops_masked=True)
    crop = cv2.imread(str(tmp_path / "crops" / "m" / "0000_RBC.png"))
    assert np.array_equal(crop, result.segmented[5:35, 5:35]) and crop[0, 0].sum() == 0


# -- the folder: atomicity, resuming, settings -----------------------------------------------------
def test_interrupted_then_resumed_folder_is_byte_identical(tmp_path, bccd_results):
    pairs = [*bccd_results, (Item("empty", "empty.png"), empty_result())]
    items = [item for item, _ in pairs]
    write_folder(tmp_path / "straight", pairs, FORMATS)

    resumed = tmp_path / "resumed"
    writer = AnnotationWriter(resumed, CLASSES, FORMATS, workers=0)
    for item, result in pairs[:2]:
        writer.write(result, item)
    # What a kill in the middle of frame 3 leaves: some of its files, no record, temporaries,
    # a half-written crops folder, a stale aggregate temporary.
    third_item, third = pairs[2]
    (resumed / "yolo" / f"{third_item.key}.txt").write_text("0 0.5 0.5 0.1 0.1\n")
    tmp = resumed / ".fastcell" / "tmp"
    (tmp / "file-half").write_bytes(b"\x89PNG half")
    (tmp / "dir-crops").mkdir(parents=True)
    (tmp / "dir-crops" / "0000_RBC.jpg").write_bytes(b"half")
    (resumed / "crops" / third_item.key).mkdir(parents=True)
    (resumed / "crops" / third_item.key / "0099_RBC.jpg").write_bytes(b"stale")
    (tmp / "file-coco").write_text("{")
    writer.close()  # killed: no finish()

    writer = AnnotationWriter(resumed, CLASSES, FORMATS, workers=2)
    assert [writer.is_done(i.key) for i in items] == [True, True, False, False, False]
    for item, result in pairs:
        if not writer.is_done(item.key):
            writer.submit(result, item)
    writer.finish(items)
    writer.close()
    straight, again = read_tree(tmp_path / "straight"), read_tree(resumed)
    assert sorted(straight) == sorted(again)
    assert [k for k in straight if straight[k] != again[k]] == []


def test_aggregates_follow_source_order_not_completion_order(tmp_path, bccd_results):
    coco_mod = pytest.importorskip("pycocotools.coco")
    with AnnotationWriter(tmp_path, CLASSES, ("coco", "csv"), workers=3) as writer:
        for item, result in reversed(bccd_results):
            writer.submit(result, item)
        totals = writer.finish([item for item, _ in bccd_results])
    names = [img["file_name"] for img in coco_mod.COCO(str(tmp_path / COCO_FILE)).dataset["images"]]
    assert names == [item.name for item, _ in bccd_results]
    assert totals.images == len(bccd_results)
    expected = {c: sum(r.counts()[c] for _, r in bccd_results) for c in CLASSES}
    assert totals.cells == expected


def test_other_settings_are_refused_unless_overwriting(tmp_path):
    item, result = Item("a", "a.png"), make_result(np.zeros((20, 20, 3), np.uint8), [[2, 2, 9, 9]], [0])
    write_folder(tmp_path, [(item, result)], ("yolo",))
    with pytest.raises(SettingsMismatch, match="formats"):
        AnnotationWriter(tmp_path, CLASSES, ("yolo", "voc"))
    with AnnotationWriter(tmp_path, CLASSES, ("yolo", "voc"), overwrite=True) as writer:
        assert not writer.is_done("a")  # starting over: nothing counts as finished


def test_one_writer_per_folder(tmp_path):
    with AnnotationWriter(tmp_path, CLASSES, ("yolo",)):
        with pytest.raises(RuntimeError, match="another fastcell annotate run"):
            AnnotationWriter(tmp_path, CLASSES, ("yolo",))


def test_writing_errors_surface_and_leave_no_record(tmp_path):
    result = make_result(np.zeros((20, 20, 3), np.uint8), [[2, 2, 9, 9]], [0])
    result.segmented = None
    writer = AnnotationWriter(tmp_path, CLASSES, ("yolo", "segmented"), workers=1)
    writer.submit(result, Item("a", "a.png"))
    with pytest.raises(ValueError, match="no segmented image"):
        writer.finish([Item("a", "a.png")])
    writer.close()
    assert not writer.is_done("a")


def test_bad_options_say_what_was_expected(tmp_path):
    with pytest.raises(ValueError, match="subset of"):
        AnnotationWriter(tmp_path, CLASSES, ("yolo", "parquet"))
    with pytest.raises(ValueError, match="label_format"):
        AnnotationWriter(tmp_path, CLASSES, ("labels",), label_format="jpg")
    with pytest.raises(ValueError, match="image_format"):
        AnnotationWriter(tmp_path, CLASSES, ("segmented",), image_format="gif")
    with pytest.raises(ValueError, match="JPEG holds 8-bit"):
        formats.encode_image(np.zeros((4, 4), np.uint16), "jpg")


# -- names: any file name, unique keys, the writer's own files -------------------------------------------
def test_unique_keys_never_collide_nest_or_take_the_writers_own_names():
    from fastcell.io.writers import RESERVED_KEYS, unique_keys

    names = ["img.jpg", "img.png", "img.jpg.png", "classes.jpg", "data.tif", "x.jpg", "x/y.jpg", "A.png", "a.tif",
             "foo.fastcell-tmp.jpg", "noext", "sub/c.jpg", "c.png", "X.JPG~2", "deep/x.jpg/z.png"]
    keys = unique_keys(names)
    assert dict(zip(names, keys)) == {
        "img.jpg": "img.jpg", "img.png": "img.png", "img.jpg.png": "img.jpg.png",  # stems shared or taken
        "classes.jpg": "classes.jpg", "data.tif": "data.tif",  # yolo/classes.txt stays the writer's
        "x.jpg": "x.jpg", "x/y.jpg": "x/y",  # crops/x/ would hold crops/x/y/
        "A.png": "A.png", "a.tif": "a.tif",  # one file on a case-insensitive disk
        "foo.fastcell-tmp.jpg": "foo.fastcell-tmp", "noext": "noext", "sub/c.jpg": "sub/c", "c.png": "c",
        "X.JPG~2": "X.JPG~2", "deep/x.jpg/z.png": "deep/x.jpg/z",
    }
    folded = [k.casefold() for k in keys]
    assert len(set(folded)) == len(keys) and not set(folded) & RESERVED_KEYS
    assert not any(b.startswith(a + "/") for a in folded for b in folded)  # no key is a folder of another
    assert unique_keys(list(reversed(names))) == list(reversed(keys))  # the same names, the same keys
    assert unique_keys(["a.jpg", "A.JPG", "a.jpg~2.png"]) == ["a.jpg~2", "A.JPG", "a.jpg~2.png"]  # sorted: A first
    with pytest.raises(ValueError, match="distinct"):
        unique_keys(["a.jpg", "a.jpg"])


@pytest.mark.parametrize("key", ["classes", "Data", "../up", "/abs", "a//b", "a/./b", ""])
def test_the_writer_refuses_keys_that_are_unsafe_or_its_own(tmp_path, key):
    with AnnotationWriter(tmp_path, CLASSES, ("yolo",), workers=0) as writer:
        with pytest.raises(ValueError, match="key"):
            writer.write(empty_result(), Item(key, "x.png"))
    assert not (tmp_path.parent / "up.txt").exists()


def test_text_names_are_utf8_one_line_and_reversible():
    import os

    from fastcell.io._names import name_from_text, text_name

    cases = {b"plain.jpg": "plain.jpg", "\u00fcml.jpg".encode(): "\u00fcml.jpg", b"bad_\xff.jpg": "bad_\\xff.jpg",
             b"back\\slash.jpg": "back\\\\slash.jpg", b"two\nlines\t.jpg": "two\\x0alines\\x09.jpg",
             b"\\xff.jpg": "\\\\xff.jpg"}  # a literal backslash-x-f-f is told apart from the byte 0xFF
    for raw, text in cases.items():
        assert text_name(os.fsdecode(raw)) == text == text_name(raw)
        assert os.fsencode(name_from_text(text)) == raw
    every = bytes(b for b in range(1, 256) if b != ord("/"))
    assert os.fsencode(name_from_text(text_name(every))) == every
    assert text_name(every).isprintable() and text_name(every).encode("utf-8")


def test_every_writer_takes_names_that_are_not_utf8(tmp_path):
    """COCO, CSV, VOC, failed.txt and the per-image files for a frame named with bytes that are not
    UTF-8, a line break and a backslash: every text file is valid UTF-8 and names it escaped."""
    import os

    raw_name = os.fsdecode(b"s\xe9\\b\nad_\xff.png")
    escaped = "s\\xe9\\\\b\\x0aad_\\xff.png"
    image = np.full((40, 40, 3), 180, np.uint8)
    result = make_result(image, [[5, 5, 35, 35]], [0])
    result.source = os.fsdecode(os.fsencode(tmp_path) + b"/src/") + raw_name
    out = tmp_path / "out"
    with AnnotationWriter(out, CLASSES, FORMATS, workers=0) as writer:
        writer.write(result, Item(raw_name[:-4], raw_name))
        writer.finish([Item(raw_name[:-4], raw_name)], [(raw_name, "unreadable: bad"), "plain line\nsplit"])
    coco = json.loads((out / COCO_FILE).read_bytes().decode("utf-8"))
    assert coco["images"][0]["file_name"] == escaped
    rows = list(csv.reader((out / CSV_FILE).read_bytes().decode("utf-8").splitlines()))
    assert rows[1][0] == escaped
    voc = ET.fromstring((out / "voc" / os.fsdecode(os.fsencode(raw_name[:-4]) + b".xml")).read_bytes())
    assert voc.findtext("filename") == escaped and voc.findtext("path").endswith("/src/" + escaped)
    assert (out / "failed.txt").read_bytes().decode("utf-8") == f"{escaped}: unreadable: bad\nplain line split\n"
    assert os.path.isfile(os.fsencode(out / "yolo") + b"/s\xe9\\b\nad_\xff.txt")
    assert os.listdir(out / "crops") and not os.listdir(out / ".fastcell" / "tmp")


def test_a_key_that_looks_like_a_temporary_survives_a_restart(tmp_path):
    """Temporaries live in .fastcell/tmp, so an output named like one is never removed as stale."""
    image = np.full((40, 40, 3), 180, np.uint8)
    pairs = [(Item("foo.fastcell-tmp", "foo.fastcell-tmp.png"), make_result(image, [[5, 5, 35, 35]], [0])),
             (Item(".foo.png.fastcell-tmp", ".foo.png.fastcell-tmp.png"), make_result(image, [[5, 5, 35, 35]], [0]))]
    write_folder(tmp_path, pairs, FORMATS)
    before = read_tree(tmp_path)
    AnnotationWriter(tmp_path, CLASSES, FORMATS).close()  # a rerun starts: it cleans up temporaries
    assert read_tree(tmp_path) == before
    assert (tmp_path / "crops" / "foo.fastcell-tmp" / "0000_RBC.png").is_file()


@pytest.mark.parametrize("workers, error", [(-1, ValueError), (1.5, TypeError), (True, TypeError)])
def test_bad_writer_threads_are_refused_before_the_folder_is_touched(tmp_path, workers, error):
    with pytest.raises(error, match="workers"):
        AnnotationWriter(tmp_path / "out", CLASSES, ("yolo",), workers=workers)
    assert not (tmp_path / "out").exists()  # no run.json recording the refused setting
