"""What runs on a Ray worker: one Annotator and one writer per actor, fed batches of image paths.

The actor runs the single-process pipeline unchanged — :func:`fastcell.stream` over
:class:`~fastcell.io.sources.ImageFiles` into :meth:`AnnotationWriter.write` — so a distributed run
writes the same per-image files and records as ``fastcell annotate``. Only the run-level files are
left to the driver.

Exactly-once, the argument: an image's *record* (``.fastcell/records/<key>.json``, written last and
atomically) is its only "finished" mark. A batch first drops the images already recorded, so a
batch that Ray retries after its actor was killed writes only what the killed attempt did not
finish; the one image in flight at the kill is written again under the same names (every file is
replaced atomically), never beside itself. The driver builds COCO/CSV/Parquet from the records, one
entry per key, so each image is in them exactly once.

Nothing here imports Ray: the class is handed to ``Dataset.map_batches``, which makes the actors.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import socket
import tempfile
import time
import weakref
from pathlib import Path
from typing import Any

import numpy as np

from fastcell.io.writers import AnnotationWriter, Item
from fastcell.io.writers._atomic import write_bytes

__all__ = ["AnnotateActor", "WorkerWriter", "model_bundle", "unpack_model", "cells_path", "finished", "probe"]

#: per-image detections for the Parquet table, beside the records
CELLS_DIR = "cells"
# A TensorRT engine is built for one GPU model and TensorRT version: each node builds its own.
_NOT_SHIPPED = (".engine", ".plan", ".trt", ".cache")


# -- the model, shipped through Ray's object store ------------------------------------------------
def model_bundle(model: str | os.PathLike) -> dict[str, Any]:
    """The model's folder (metadata JSON and weights) as bytes, to ship to nodes that lack it.

    Returns ``{"json": name of the metadata file, "files": {name: bytes}, "digest": sha256}``; the
    digest names the node-local copy, so actors on one node unpack it once.
    """
    from fastcell.spec import find_model

    meta = find_model(model)
    files = {}
    for path in sorted(meta.parent.iterdir()):
        if path.is_file() and not path.name.startswith(".") and path.suffix not in _NOT_SHIPPED:
            files[path.name] = path.read_bytes()
    digest = hashlib.sha256()
    for name, data in files.items():
        digest.update(name.encode() + b"\0" + hashlib.sha256(data).digest())
    return {"json": meta.name, "files": files, "digest": digest.hexdigest()[:16]}


def unpack_model(bundle: Any) -> Path:
    """Write a :func:`model_bundle` (or a Ray object reference to one) into this node's temporary
    folder, once per node; return the path of its metadata JSON."""
    if not isinstance(bundle, dict):  # an ObjectRef: the driver put the bundle in the object store once
        import ray

        bundle = ray.get(bundle)
    folder = Path(tempfile.gettempdir()) / "fastcell-models" / bundle["digest"]
    if not (folder / bundle["json"]).is_file():
        folder.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{bundle['digest']}-", dir=folder.parent))
        for name, data in bundle["files"].items():
            (staging / name).write_bytes(data)
        try:
            os.replace(staging, folder)  # atomic: another actor on this node may be unpacking too
        except OSError:  # it finished first; use its copy
            shutil.rmtree(staging, ignore_errors=True)
    return folder / bundle["json"]


def finished(writer: AnnotationWriter, key: str) -> bool:
    """Whether ``key`` is finished for a distributed run: its record and its detections are there
    (an image finished by a single-process run has no detections file and is annotated again)."""
    return writer.is_done(key) and cells_path(writer.out_dir, key).is_file()


# -- the writer, without the folder lock --------------------------------------------------------------
class WorkerWriter(AnnotationWriter):
    """An :class:`AnnotationWriter` for one of many processes writing into one run folder.

    The driver holds the folder's lock and wrote ``run.json``; it also cleared stale temporaries
    before any worker started. A worker only writes frames: two workers never write the same key
    at once, because Ray gives each image to one task at a time (a retry starts after the failed
    attempt's actor is dead).
    """

    def _open_lock(self):  # the driver holds the real lock
        self._state.mkdir(parents=True, exist_ok=True)
        return open(os.devnull, "w")

    def _start(self, extra: dict[str, Any], overwrite: bool) -> None:
        run_file = self._state / "run.json"
        if not run_file.is_file():
            raise RuntimeError(f"{run_file} is missing: the driver must open the run before workers write")
        self._records.mkdir(parents=True, exist_ok=True)


def write_atomic(path: Path, data: bytes) -> None:
    """Write ``path`` through a unique temporary in ``OUT/.fastcell/tmp`` (the folder the writer
    keeps its temporaries in and clears when a run starts), then rename it into place."""
    state = next(p for p in path.parents if p.name == ".fastcell")
    write_bytes(path, data, state / "tmp", prefix="cells-")


def cells_path(out_dir: Path, key: str) -> Path:
    return Path(out_dir) / ".fastcell" / CELLS_DIR / f"{key}.json"


def _cells(result: Any) -> dict[str, Any]:
    """One frame's detections for the Parquet table: boxes, scores, classes and area.

    The area is the cell's mask pixels when masks were computed (as COCO's ``area``), else its box
    area.
    """
    boxes = np.asarray(result.boxes, np.float64).reshape(-1, 4)
    if result.labels is not None:
        area = np.bincount(np.asarray(result.labels).ravel(), minlength=len(result) + 1)[1:len(result) + 1]
    else:
        area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    height, width = result.shape
    return {
        "width": int(width), "height": int(height),
        "class_id": [int(c) for c in result.class_ids],
        "score": [float(s) for s in np.asarray(result.scores, np.float32)],
        "box": [[float(v) for v in np.asarray(b, np.float32)] for b in boxes],
        "area": [float(a) for a in area],
    }


# -- the actor ------------------------------------------------------------------------------------
class AnnotateActor:
    """Ray Data callable class: ``batch`` (columns index, path, key, name, source_format) → one
    status row per image (index, key, status ``written``/``done``/``failed``, cells, reason,
    worker ``host:pid``, time: ``time.time()`` when the batch was written).

    Parameters
    ----------
    config : dict
        ``bundle`` (:func:`model_bundle`), ``device``, ``precision``, ``segment``, ``keep_image``,
        ``batch_size``, ``overrides``, ``threads``, ``num_threads``, ``out_dir``, ``writer`` (the
        :class:`AnnotationWriter` keyword arguments), ``stall_timeout``, ``max_pixels``.
    """

    def __init__(self, config: dict[str, Any]) -> None:
        import fastcell

        self.config = config
        model = unpack_model(config["bundle"])
        options = {"num_threads": config["num_threads"]} if config.get("num_threads") else {}
        self.annotator = fastcell.load(model, config["device"], config["precision"], segment=config["segment"],
                                       keep_image=config["keep_image"], max_batch=config["batch_size"],
                                       verbose=False, **options, **config["overrides"])
        self.out_dir = Path(config["out_dir"])
        self.writer = WorkerWriter(self.out_dir, self.annotator.spec.classes, **config["writer"])
        self.worker = f"{socket.gethostname()}:{os.getpid()}"
        self._staging = Path(tempfile.mkdtemp(prefix="fastcell-ray-"))  # node-local copies of URIs
        weakref.finalize(self, shutil.rmtree, self._staging, True)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, list]:
        from fastcell.distributed._sources import is_uri

        n = len(batch["index"])
        rows: dict[int, dict[str, Any]] = {}
        todo: list[int] = []
        local: list[str] = []
        for i in range(n):
            key, path = str(batch["key"][i]), str(batch["path"][i])
            if finished(self.writer, key):  # finished by a killed attempt of this batch, before the kill
                rows[i] = {"status": "done", "cells": self._recorded_cells(key), "reason": ""}
                continue
            try:
                local.append(self._fetch(path, int(batch["index"][i])) if is_uri(path) else path)
            except (OSError, ValueError) as err:  # unreadable URI: this image's failure, as a bad file is
                rows[i] = {"status": "failed", "cells": 0, "reason": str(err) or type(err).__name__}
                continue
            todo.append(i)
        if todo:
            self._annotate(batch, todo, local, rows)
        missing = [int(batch["index"][i]) for i in range(n) if i not in rows]
        if missing:  # the stream ended early without an error: never report these as finished
            raise RuntimeError(f"images {missing} got no result")
        return {
            "index": [int(batch["index"][i]) for i in range(n)],
            "key": [str(batch["key"][i]) for i in range(n)],
            "status": [rows[i]["status"] for i in range(n)],
            "cells": [rows[i]["cells"] for i in range(n)],
            "reason": [rows[i]["reason"] for i in range(n)],
            "worker": [self.worker] * n,
            "time": [time.time()] * n,  # when the batch was on disk (for throughput, across processes)
        }

    def _annotate(self, batch: dict[str, np.ndarray], todo: list[int], local: list[str],
                  rows: dict[int, dict[str, Any]]) -> None:
        """The single-process pipeline over the batch's unfinished images (fills ``rows``)."""
        import fastcell
        from fastcell.io.sources import ImageFiles

        config = self.config
        source = ImageFiles(local, name="ray batch", workers=config["threads"], max_pixels=config["max_pixels"])
        # The settings of single-process annotate: every frame, in order, a hung read stops the task.
        stream = fastcell.stream(source, self.annotator, batch_size=config["batch_size"],
                                 keep_image=config["keep_image"], segment=config["segment"], live=False, drop=False,
                                 stall_timeout=config["stall_timeout"], on_stall="raise", workers=config["threads"])
        try:
            with stream:
                for result in stream:
                    i = todo[result.frame_index]
                    result.source = str(batch["path"][i])  # the URI, not the node-local copy of it
                    item = Item(key=str(batch["key"][i]), name=str(batch["name"][i]),
                                source_format=str(batch["source_format"][i]) or None)
                    # Detections first, the record last: a recorded image always has its detections.
                    write_atomic(cells_path(self.out_dir, item.key),
                                 (json.dumps(_cells(result), separators=(",", ":")) + "\n").encode())
                    self.writer.submit(result, item)
                    rows[i] = {"status": "written", "cells": len(result), "reason": ""}
                self.writer.wait()  # the task ends only when its images are on disk
        finally:
            for path in local:
                if path.startswith(str(self._staging)):
                    Path(path).unlink(missing_ok=True)
        by_path = {path: todo[j] for j, path in enumerate(local)}
        for path, reason in stream.failed:
            rows[by_path[path]] = {"status": "failed", "cells": 0, "reason": reason}

    def _recorded_cells(self, key: str) -> int:
        record = json.loads(self.writer.record_path(key).read_text())
        return sum(int(n) for n in record["counts"].values())

    def _fetch(self, uri: str, index: int) -> str:
        """Copy a URI's bytes to this node; the single-process reader then decodes them as usual."""
        from fastcell.distributed._sources import _filesystem

        target = self._staging / f"{index}_{uri.rsplit('/', 1)[-1]}"  # the suffix tells the decoder the format
        fs, path = _filesystem(uri)
        with fs.open_input_stream(path) as f:
            target.write_bytes(f.read())
        return str(target)


def probe(config: dict[str, Any]) -> dict[str, Any]:
    """Open the model as the actors will and say which backend it got (for ``run.json``)."""
    import fastcell

    model = unpack_model(config["bundle"])
    options = {"num_threads": config["num_threads"]} if config.get("num_threads") else {}
    annotator = fastcell.load(model, config["device"], config["precision"], segment=config["segment"],
                              keep_image=config["keep_image"], max_batch=config["batch_size"], verbose=False,
                              **options, **config["overrides"])
    try:
        return {"classes": list(annotator.spec.classes), "model": annotator.spec.name,
                "model_sha256": annotator.spec.extra.get("sha256"),
                "backend": f"{annotator.backend.name}/{annotator.backend.precision}"}
    finally:
        annotator.close()
