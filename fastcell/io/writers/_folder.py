"""The output folder of an annotation run: per-image files, resumability, and the merged files.

Resumability, the design in one paragraph: every file is written atomically (temporary name, then
``os.replace``). For each frame the per-image files (YOLO, VOC, label image, segmented image,
overlay, crops) are written first and a small JSON *record* last, in ``.fastcell/records/``; the
record is the frame's "finished" mark and holds what the aggregate files need (its COCO image
entry and annotations, its CSV rows, its counts). The aggregate files — COCO JSON, CSV — are never
appended to: :meth:`AnnotationWriter.finish` rebuilds them from the records in source order, with
ids numbered in that order. So a run killed at any point leaves finished frames (record present),
at most one unfinished frame per writer thread (files present but no record: written again, with
the same names, by the rerun) and stale temporaries (removed on start); the rerun skips the
recorded frames and rebuilds the aggregates, and the folder ends byte-identical to that of an
uninterrupted run — given that the model returns the same detections for the same frame. The
settings that shape the output are stored in ``.fastcell/run.json``; a rerun with other settings is
refused rather than mixing two kinds of output in one folder — the source among them, when the
caller names it (``fastcell annotate`` does): two sources are never merged into one folder.

Names: each frame's *key* (its output name) must be unique in the run, never a folder of another
key (``crops/x/`` would hold ``crops/x/y/``), never one of the writer's own files
(``yolo/classes.txt``), and unique ignoring case (on a case-insensitive disk ``A`` and ``a`` are
one file); :func:`unique_keys` gives such keys, and :meth:`AnnotationWriter.paths` refuses others.
Temporaries live in ``.fastcell/tmp`` (see :mod:`~fastcell.io.writers._atomic`), never beside
outputs, so no key can be mistaken for one.
"""

from __future__ import annotations

import csv
import io
import json
import posixpath
import shutil
from collections import deque
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

from fastcell.io._names import text_name
from fastcell.io._threads import DaemonPool
from fastcell.io.writers import _atomic
from fastcell.io.writers import formats as _fmt  # not `formats`: that is the writer's parameter
from fastcell.results import Result

try:
    import fcntl
except ImportError:  # Windows: no advisory locks; one run per folder is then up to the user
    fcntl = None  # type: ignore[assignment]

__all__ = ["FORMATS", "DEFAULT_FORMATS", "Item", "AnnotationWriter", "SettingsMismatch", "unique_keys", "owned_paths",
           "RESERVED_KEYS", "failed_line"]

#: Everything ``fastcell annotate --write`` can produce.
FORMATS = ("yolo", "coco", "voc", "csv", "labels", "segmented", "overlay", "crops")
#: What it produces unless told otherwise.
DEFAULT_FORMATS = ("yolo", "coco", "labels", "segmented")

_STATE = ".fastcell"
_RUN_FORMAT = "fastcell-annotate/1"
# Output sub-folders (and files) this writer owns; nothing else in the output folder is touched.
_DIRS = {"yolo": "yolo", "voc": "voc", "labels": "labels", "segmented": "segmented", "overlay": "overlays", "crops": "crops"}
COCO_FILE = "annotations.json"
CSV_FILE = "cells.csv"
FAILED_FILE = "failed.txt"
#: Keys no frame may have: the writer's own files in the per-image folders (``yolo/classes.txt``;
#: ``data`` too, so that ``yolo/data.*`` stays the writer's).
RESERVED_KEYS = frozenset({"classes", "data"})


class SettingsMismatch(RuntimeError):
    """The output folder holds a run made with other settings."""


@dataclass(frozen=True)
class Item:
    """What a frame is called in the output.

    Attributes
    ----------
    key : str
        Unique within the run (see :func:`unique_keys`), ``/``-separated, usually without the
        suffix: the stem of every per-image file (``yolo/<key>.txt``, ``labels/<key>.png`` …)
        and of its record.
    name : str
        The frame's name inside annotation files (COCO ``file_name``, VOC ``filename``, CSV
        ``image``): its path relative to the source folder, or ``<video>_<frame>`` for video frames.
    source_format : str or None
        ``"jpg"`` when the source file is a JPEG: ``image_format="auto"`` then writes JPEG images
        (nothing is lost that the source kept); otherwise PNG.
    frame_index : int or None
        A video frame's position, stored in its COCO entry.
    """

    key: str
    name: str
    source_format: str | None = None
    frame_index: int | None = None


@dataclass
class Totals:
    """What :meth:`AnnotationWriter.finish` found in the folder."""

    images: int = 0
    cells: dict[str, int] = field(default_factory=dict)


class AnnotationWriter:
    """Writes chosen annotation formats for a stream of results into one folder, resumably.

    Parameters
    ----------
    out_dir : str or Path
        The output folder (created if needed).
    classes : tuple of str
        The model's class names, in class-id order.
    formats : iterable of str
        A subset of :data:`FORMATS`.
    image_format : {"auto", "png", "jpg", "tif"}
        Format of segmented images, overlays and crops; ``"auto"``: JPEG for JPEG sources, PNG
        otherwise.
    label_format : {"png", "tif"}
        Format of the 16-bit instance label images (both read back as uint16 by OpenCV, napari,
        tifffile, cellpose).
    coco_segmentation : {"rle", "polygon", "none"}
        See :func:`fastcell.io.writers.formats.coco_annotations`.
    yolo_scores : bool
        Add the score as a sixth column of the YOLO files.
    crops_masked : bool
        Crop from the segmented image (debris removed) instead of the original frame.
    settings : dict, optional
        More run settings that shape the output (model, thresholds); stored with the writer's own
        and compared on resume.
    overwrite : bool
        Start over in a folder that holds a run with other settings (or any run): its records are
        deleted, its files overwritten.
    workers : int
        Threads encoding and writing files (image encoders release the GIL); 0 writes inline.

    Raises
    ------
    TypeError, ValueError
        For a setting of the wrong type or value (checked before anything is created or written).
    SettingsMismatch
        The folder holds a run with other settings and ``overwrite`` is false.
    RuntimeError
        Another process is writing into the same folder.
    """

    def __init__(
        self,
        out_dir: str | Path,
        classes: tuple[str, ...],
        formats: Iterable[str] = DEFAULT_FORMATS,
        *,
        image_format: str = "auto",
        label_format: str = "png",
        coco_segmentation: str = "rle",
        yolo_scores: bool = False,
        crops_masked: bool = False,
        settings: dict[str, Any] | None = None,
        overwrite: bool = False,
        workers: int = 2,
    ) -> None:
        if isinstance(workers, bool) or not isinstance(workers, int) or workers < 0:
            raise (ValueError if isinstance(workers, int) and not isinstance(workers, bool) else TypeError)(
                f"workers must be an int >= 0 (0: write inline), got {workers!r}")
        requested = tuple(formats)
        self.formats = tuple(f for f in FORMATS if f in requested)  # canonical order
        unknown = sorted(set(requested) - set(FORMATS))
        if unknown or not self.formats:
            raise ValueError(f"formats must be a non-empty subset of {list(FORMATS)}, got {list(requested)}")
        if image_format not in ("auto", *_fmt.IMAGE_FORMATS):
            raise ValueError(f"image_format must be 'auto' or one of {list(_fmt.IMAGE_FORMATS)}, got {image_format!r}")
        if label_format not in ("png", "tif"):
            raise ValueError(f"label_format must be 'png' or 'tif', got {label_format!r}")
        if coco_segmentation not in ("rle", "polygon", "none"):
            raise ValueError(f"coco_segmentation must be 'rle', 'polygon' or 'none', got {coco_segmentation!r}")
        self.out_dir = Path(out_dir)
        self.classes = tuple(classes)
        self.image_format = image_format
        self.label_format = label_format
        self.coco_segmentation = coco_segmentation
        self.yolo_scores = bool(yolo_scores)
        self.crops_masked = bool(crops_masked)
        self._state = self.out_dir / _STATE
        self._records = self._state / "records"
        self._tmp = self._state / "tmp"
        self._lock_file = self._open_lock()
        try:
            self._start(dict(settings or {}), overwrite)
        except BaseException:
            self._lock_file.close()
            raise
        # Daemon threads: an interrupt that skips close() must not leave a thread the interpreter
        # waits for at exit; a write cut short is safe (temporary, then rename).
        self._pool = DaemonPool(workers, "fastcell-writer") if workers > 0 else None
        self._max_pending = max(2 * workers, 1)
        self._pending: deque[Future] = deque()

    # -- setup ------------------------------------------------------------------------------------
    def _open_lock(self):
        self._state.mkdir(parents=True, exist_ok=True)
        handle = open(self._state / "lock", "w")
        if fcntl is None:
            return handle
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.close()
            raise RuntimeError(f"another fastcell annotate run is writing into {self.out_dir}") from None
        return handle

    def _settings(self, extra: dict[str, Any]) -> dict[str, Any]:
        return {
            "formats": list(self.formats),
            "classes": list(self.classes),
            "image_format": self.image_format,
            "label_format": self.label_format,
            "coco_segmentation": self.coco_segmentation,
            "yolo_scores": self.yolo_scores,
            "crops_masked": self.crops_masked,
            **extra,
        }

    def _start(self, extra: dict[str, Any], overwrite: bool) -> None:
        run_file = self._state / "run.json"
        wanted = {"format": _RUN_FORMAT, "settings": self._settings(extra)}
        wanted = json.loads(json.dumps(wanted))  # tuples → lists, as they read back
        if run_file.is_file() and not overwrite:
            found = json.loads(run_file.read_text())
            if found != wanted:
                old, new = found.get("settings", {}), wanted["settings"]
                diff = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))
                if "source" in diff:
                    raise SettingsMismatch(
                        f"{text_name(self.out_dir)} holds annotations of another source "
                        f"({text_name(str(old.get('source')))}, not {text_name(str(new.get('source')))}); "
                        "two sources are not merged into one folder: choose another output folder, "
                        "or pass overwrite=True (--overwrite) to start over with this source"
                    )
                raise SettingsMismatch(
                    f"{self.out_dir} holds a run made with other settings ({', '.join(diff) or 'format'} "
                    f"differ: {[(k, old.get(k), new.get(k)) for k in diff]}); choose another output "
                    "folder, rerun with the same settings to resume, or pass overwrite=True (--overwrite)"
                )
        if overwrite and self._records.exists():
            shutil.rmtree(self._records)
        self._records.mkdir(parents=True, exist_ok=True)
        _atomic.remove_stale_temporaries(self._tmp)
        _atomic.write_text(run_file, json.dumps(wanted, indent=2) + "\n", self._tmp)

    # -- paths ------------------------------------------------------------------------------------
    def record_path(self, key: str) -> Path:
        _check_key(key)
        return self._records / f"{key}.json"

    def is_done(self, key: str) -> bool:
        """Whether the frame ``key`` was written completely (by this run or an earlier one)."""
        return self.record_path(key).is_file()

    def _image_format(self, item: Item) -> str:
        if self.image_format != "auto":
            return self.image_format
        return "jpg" if item.source_format == "jpg" else "png"

    def paths(self, item: Item) -> dict[str, Path]:
        """Where each per-image format of ``item`` goes (crops: a folder).

        Raises
        ------
        ValueError
            For a key that is not a relative ``/``-separated name, or is one of :data:`RESERVED_KEYS`.
        """
        _check_key(item.key)
        ext = _fmt.IMAGE_FORMATS[self._image_format(item)][0]
        label_ext = _fmt.IMAGE_FORMATS[self.label_format][0]
        suffix = {"yolo": ".txt", "voc": ".xml", "labels": label_ext, "segmented": ext, "overlay": ext, "crops": ""}
        return {f: self.out_dir / _DIRS[f] / f"{item.key}{suffix[f]}" for f in self.formats if f in _DIRS}

    # -- writing ----------------------------------------------------------------------------------
    def write(self, result: Result, item: Item) -> None:
        """Write every chosen format for one frame, then its record (synchronously)."""
        img_fmt = self._image_format(item)
        for fmt, path in self.paths(item).items():
            if fmt == "crops":
                self._write_crops(result, path, img_fmt)
            else:
                _atomic.write_bytes(path, self._encode(fmt, result, item, img_fmt), self._tmp)
        record: dict[str, Any] = {
            "image": _fmt.coco_image(result, item.name, item.frame_index),
            "counts": result.counts(),
        }
        runs = _fmt.mask_runs(result) if {"coco", "csv"} & set(self.formats) else None
        if "coco" in self.formats:
            record["annotations"] = _fmt.coco_annotations(result, self.coco_segmentation, runs)
        if "csv" in self.formats:
            record["csv"] = _fmt.csv_rows(result, item.name, runs)
        _atomic.write_text(self.record_path(item.key), json.dumps(record, separators=(",", ":")) + "\n", self._tmp)

    def _encode(self, fmt: str, result: Result, item: Item, img_fmt: str) -> bytes:
        if fmt == "yolo":
            return _fmt.yolo_text(result, self.yolo_scores).encode()
        if fmt == "voc":
            # VOC's <folder> is the name of the folder holding the image (BCCD: "JPEGImages").
            where = Path(result.source) if result.source else Path(item.name)
            return _fmt.voc_xml(result, Path(item.name).name, where.parent.name, result.source)
        if fmt == "labels":
            return _fmt.encode_image(_fmt.label_image(result), self.label_format)
        if fmt == "segmented":
            if result.segmented is None:
                raise ValueError(f"{item.name}: no segmented image (segmentation was switched off)")
            return _fmt.encode_image(result.segmented, img_fmt)
        if fmt == "overlay":
            return _fmt.encode_image(_fmt.overlay_image(result), img_fmt)
        raise AssertionError(fmt)

    def _write_crops(self, result: Result, folder: Path, img_fmt: str) -> None:
        staging = _atomic.staging_dir(self._tmp)
        ext = _fmt.IMAGE_FORMATS[img_fmt][0]
        for i, (crop, name) in enumerate(zip(result.crops(masked=self.crops_masked), result.class_names)):
            if crop.size == 0:
                continue  # a box thinner than a pixel has nothing to crop
            if img_fmt == "jpg" and crop.dtype != "uint8":
                crop = _fmt.display_image(crop)
            (staging / f"{i:04d}_{_safe(name)}{ext}").write_bytes(_fmt.encode_image(crop, img_fmt))
        _atomic.replace_dir(staging, folder)

    def submit(self, result: Result, item: Item) -> None:
        """Queue one frame for :meth:`write` on the writer threads.

        Blocks while ``2 · workers`` frames are waiting, so memory stays flat however fast frames
        come. An error from an earlier frame is raised here (or by :meth:`wait`/:meth:`finish`).
        """
        if self._pool is None:
            self.write(result, item)
            return
        while self._pending and (self._pending[0].done() or len(self._pending) >= self._max_pending):
            self._pending.popleft().result()  # re-raises a writing error, once
        self._pending.append(self._pool.submit(self.write, result, item))

    def wait(self) -> None:
        """Block until every submitted frame is written; raise the first writing error."""
        while self._pending:
            self._pending.popleft().result()

    # -- the merged files -------------------------------------------------------------------------
    def finish(self, items: Iterable[Item], failed: Iterable[str] = ()) -> Totals:
        """Wait for the writers, then rebuild the aggregate files from the records, in ``items`` order.

        Parameters
        ----------
        items : iterable of Item
            Every frame of the source, in source order (unfinished ones are left out of the files).
        failed : iterable of (path, reason) or str
            Sources that could not be read or were skipped: listed in ``failed.txt`` one a line,
            ``path: reason`` (the path escaped as :func:`fastcell.io._names.text_name` says),
            which is removed when there are none.

        Returns
        -------
        Totals
            Frames in the folder's annotation files and cells per class over them.
        """
        self.wait()
        totals = Totals(cells={name: 0 for name in self.classes})
        images, annotations, rows = [], [], []
        for item in items:
            path = self.record_path(item.key)
            if not path.is_file():
                continue
            record = json.loads(path.read_text())
            totals.images += 1
            for name, n in record["counts"].items():
                totals.cells[name] = totals.cells.get(name, 0) + int(n)
            image_id = len(images) + 1
            images.append({"id": image_id, **record["image"]})
            for ann in record.get("annotations", ()):
                annotations.append({"id": len(annotations) + 1, "image_id": image_id, **ann})
            rows.extend(record.get("csv", ()))
        if "coco" in self.formats:
            self._write_coco(images, annotations)
        if "csv" in self.formats:
            buffer = io.StringIO()
            writer = csv.writer(buffer, lineterminator="\n")
            writer.writerow(_fmt.CSV_HEADER)
            writer.writerows(rows)
            _atomic.write_text(self.out_dir / CSV_FILE, buffer.getvalue(), self._tmp)
        if "yolo" in self.formats:
            classes_txt, data_yaml = _fmt.yolo_classes(self.classes)
            _atomic.write_text(self.out_dir / _DIRS["yolo"] / "classes.txt", classes_txt, self._tmp)
            _atomic.write_text(self.out_dir / _DIRS["yolo"] / "data.yaml", data_yaml, self._tmp)
        failed = [failed_line(f) for f in failed]
        failed_path = self.out_dir / FAILED_FILE
        if failed:
            _atomic.write_text(failed_path, "".join(f"{f}\n" for f in failed), self._tmp)
        elif failed_path.exists():
            failed_path.unlink()
        return totals

    def _write_coco(self, images: list[dict], annotations: list[dict]) -> None:
        from fastcell._version import __version__

        document = {
            "info": {"description": "cell annotations written by fastcell annotate", "version": __version__},
            "images": images,
            "annotations": annotations,
            "categories": _fmt.coco_categories(self.classes),
        }
        # Compact separators keep big files small; no dates, so reruns are byte-identical.
        _atomic.write_text(self.out_dir / COCO_FILE, json.dumps(document, separators=(",", ":")) + "\n", self._tmp)

    # -- lifetime ---------------------------------------------------------------------------------
    def close(self) -> None:
        """Wait for the frames submitted, end the writer threads and release the folder (does not
        rebuild the aggregates). Raises the first writing error, after every frame is done."""
        try:
            error = None
            while self._pending:
                try:
                    self._pending.popleft().result()
                except Exception as err:  # noqa: BLE001 - the others still finish; the first is raised
                    error = error or err
            if error is not None:
                raise error
        finally:
            if self._pool is not None:
                self._pool.shutdown()
            self._lock_file.close()

    def __enter__(self) -> "AnnotationWriter":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _safe(name: str) -> str:
    """A class name usable in a file name."""
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name) or "cell"


def failed_line(entry: tuple[str, str] | str) -> str:
    """One line of ``failed.txt``: ``path: reason``, the path escaped, the reason on one line."""
    if isinstance(entry, tuple):
        path, reason = entry
        text = f"{text_name(path)}: {reason}"
    else:
        text = entry
    text = text.encode("utf-8", "backslashreplace").decode("utf-8")  # a reason may quote a raw name
    return " ".join(text.splitlines())


def _check_key(key: str) -> None:
    parts = key.split("/")
    if not key or key.startswith("/") or any(p in ("", ".", "..") for p in parts) or "\0" in key:
        raise ValueError(f"an output key must be a relative '/'-separated name without '.', '..' or empty "
                         f"parts, got {text_name(key)!r}")
    if key.casefold() in RESERVED_KEYS:
        raise ValueError(f"the output key {key!r} is taken by the writer's own files ({sorted(RESERVED_KEYS)}); "
                         "use unique_keys()")


def unique_keys(names: Iterable[str]) -> list[str]:
    """Output keys for frames named by distinct relative paths: unique, safe and deterministic.

    Each frame gets the first of these that is free: its name without the suffix
    (``sub/img_001``) when no other name has the same stem; its full name (``img.png``); its full
    name and ``~2``, ``~3`` … A key is free when no key taken so far equals it ignoring case, it
    is not the name of a folder of another frame (``x`` beside ``x/y.jpg``: their crops folders
    would nest), and it is not one of :data:`RESERVED_KEYS`. Names are taken in sorted order, so
    the same names always give the same keys.

    Parameters
    ----------
    names : iterable of str
        ``/``-separated relative paths, each different.

    Returns
    -------
    list of str
        One key per name, in the order given.
    """
    names = list(names)
    if len(set(names)) != len(names):
        raise ValueError("unique_keys needs distinct names")
    folded = [n.casefold() for n in names]
    stems = [posixpath.splitext(n)[0] for n in names]
    stem_count: dict[str, int] = {}
    for stem in stems:
        stem_count[stem.casefold()] = stem_count.get(stem.casefold(), 0) + 1
    folders = {n.rsplit("/", k)[0] for n in folded for k in range(1, n.count("/") + 1)}
    full = set(folded)
    taken: set[str] = set()

    def free(key: str) -> bool:
        k = key.casefold()
        return k not in taken and k not in folders and k not in RESERVED_KEYS

    keys: dict[int, str] = {}
    for i in sorted(range(len(names)), key=lambda i: names[i]):
        name, stem = names[i], stems[i]
        # the stem only where no other name shares it or is it (img.jpg beside img.jpg.png)
        candidates = [stem] if stem != name and stem_count[stem.casefold()] == 1 and stem.casefold() not in full else []
        candidates.append(name)
        key = next((c for c in candidates if free(c)), None)
        n = 2
        while key is None:
            key = f"{name}~{n}" if free(f"{name}~{n}") else None
            n += 1
        taken.add(key.casefold())
        keys[i] = key
    return [keys[i] for i in range(len(names))]


def owned_paths(out_dir: str | Path) -> list[Path]:
    """The folders of ``out_dir`` an :class:`AnnotationWriter` writes into (every format's, and
    ``.fastcell``): a source must never read from them."""
    out = Path(out_dir)
    return [out / sub for sub in sorted(set(_DIRS.values()))] + [out / _STATE]
