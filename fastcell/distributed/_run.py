"""The driver of a distributed run: plan, open the folder, run the actors on Ray Data, merge.

Flow: SRC → :func:`~fastcell.distributed._sources.resolve_source` (image list, output keys) → the
driver's :class:`AnnotationWriter` (takes the folder lock, checks/writes ``run.json`` exactly as
single-process mode does, so either engine can resume the other's folder) → a Ray Dataset of the
unfinished images → ``map_batches`` on an actor pool of :class:`AnnotateActor` (each loads the
model once) → status rows streamed back to the driver (progress bar) → ``finish`` rebuilds COCO,
CSV and ``classes.txt`` from the records in source order, and the detections Parquet table.
"""

from __future__ import annotations

import logging
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Callable, Iterable

__all__ = ["annotate", "RunSummary"]

log = logging.getLogger("fastcell")


@dataclass
class RunSummary:
    """What a distributed run did.

    Attributes
    ----------
    out_dir : Path
    images : int
        Images in the folder's annotation files (this run's and earlier runs').
    annotated : int
        Images written by this run.
    already : int
        Images finished by an earlier run (skipped without being read).
    failed : list of (str, str)
        ``(path, reason)`` for each entry of the source that was skipped (see
        :func:`fastcell.io.plan.resolve`), then each that could not be read, in source order.
    cells : dict of str to int
        Cells per class over all images in the folder.
    detections : int
        Rows of the Parquet table.
    elapsed : float
        Seconds from the first image handed to Ray to the merged files written.
    workers : list of str
        ``host:pid`` of every actor process that returned results (a restarted actor is a new pid).
    error : BaseException or None
        Why the run stopped early (what it finished stays; rerun to resume), else None.
    """

    out_dir: Path
    images: int = 0
    annotated: int = 0
    already: int = 0
    failed: list[tuple[str, str]] = field(default_factory=list)
    cells: dict[str, int] = field(default_factory=dict)
    detections: int = 0
    elapsed: float = 0.0
    workers: list[str] = field(default_factory=list)
    error: BaseException | None = None
    plan: Any = None  # the resolved source (fastcell.io.plan.Plan)


def _ray() -> Any:
    try:
        import ray
        import ray.data  # noqa: F401
    except ImportError as err:
        raise ImportError('the distributed engine needs Ray Data: pip install "fastcell[ray]"') from err
    return ray


def annotate(
    source: str | os.PathLike,
    out_dir: str | os.PathLike,
    *,
    model: str | os.PathLike = "default",
    device: str = "auto",
    precision: str | None = None,
    formats: Iterable[str] | None = None,
    address: str | None = None,
    workers: int | None = None,
    gpus_per_worker: float = 0.0,
    cpus_per_worker: float = 1.0,
    batch_size: int = 8,
    threads: int = 2,
    recursive: bool = False,
    overwrite: bool = False,
    image_format: str = "auto",
    labels_format: str = "png",
    coco_masks: str = "rle",
    yolo_scores: bool = False,
    crops_masked: bool = False,
    overrides: dict[str, Any] | None = None,
    progress: bool = True,
    on_image: Callable[[dict[str, Any]], None] | None = None,
    num_cpus: int | None = None,
    max_pixels: int | None = None,
) -> RunSummary:
    """Annotate images on a Ray cluster: the same output folder as ``fastcell annotate``, plus
    ``detections.parquet``.

    Parameters
    ----------
    source : str or path
        Folder, glob, image, list file (``.txt``), Parquet/CSV manifest with a ``path`` column, or a
        URI of any of these that pyarrow reads (``s3://…``); see
        :func:`fastcell.distributed.resolve_source`.
    out_dir : str or path
        The output folder; every worker writes into it, so on a multi-node cluster it must be a
        file system all nodes mount at the same path (NFS, Lustre, a FUSE-mounted bucket).
    model, device, precision
        As :func:`fastcell.load`; the model folder is shipped to the nodes through Ray's object
        store (nodes need fastcell installed, not the model).
    formats : iterable of str, optional
        Outputs, a subset of :data:`fastcell.io.writers.FORMATS` (default: ``DEFAULT_FORMATS``).
    address : str, optional
        A running cluster's address (``"auto"``, ``"ray://head:10001"``, ``"head:6379"``); None
        starts a local cluster of ``num_cpus`` CPUs (default: all) and stops it at the end. When
        Ray is already initialised in this process, that cluster is used.
    workers : int, optional
        Actors, each with its own copy of the model; default: as many as the cluster's CPUs (or
        GPUs, with ``gpus_per_worker``) hold, which is also the most started (with a warning).
    gpus_per_worker : float
        GPUs reserved per actor; 0.5 puts two actors on each GPU.
    cpus_per_worker : float
        CPUs reserved per actor; also its backend's thread count (rounded up).
    batch_size : int
        Images per inference call and per Ray task (a killed actor repeats at most its tasks).
    threads : int
        Decoding and writing threads in each actor.
    recursive, overwrite, image_format, labels_format, coco_masks, yolo_scores, crops_masked
        As the ``fastcell annotate`` options of the same names.
    overrides : dict, optional
        Post-processing settings (``score_threshold``, ``nms_iou``, ``merge``, ``max_detections``…).
    progress : bool
        Show a progress bar.
    on_image : callable, optional
        Called on the driver with each image's status row as it arrives: ``index`` (position in
        SRC), ``key``, ``status`` (``written``; ``done``: by an attempt of its task that Ray
        retried; ``failed``), ``cells``, ``reason`` (why it failed), ``worker`` (``host:pid``)
        and ``time`` (``time.time()`` on the worker when its batch was written).
    num_cpus : int, optional
        CPUs of the local cluster (only without ``address``).
    max_pixels : int, optional
        Largest image read (width × height), refused from its header before decoding; default:
        :data:`fastcell.io.sources.MAX_PIXELS`, 0: no limit.

    Returns
    -------
    RunSummary

    Raises
    ------
    FileNotFoundError, ValueError, TypeError
        Bad SRC or options (before anything is started).
    ImportError
        Ray Data is not installed.
    SettingsMismatch, RuntimeError
        The folder holds a run with other settings, or another run is writing into it.
    """
    from fastcell.io.plan import needs as _needs
    from fastcell.distributed._sources import resolve_source
    from fastcell.io.writers import DEFAULT_FORMATS, FORMATS

    if isinstance(formats, str):
        raise TypeError(f"formats must be an iterable of format names such as ('yolo', 'coco'), got {formats!r}")
    requested = set(DEFAULT_FORMATS if formats is None else formats)
    formats = tuple(f for f in FORMATS if f in requested)  # canonical order, as the CLI's
    if requested - set(FORMATS) or not formats:
        raise ValueError(f"formats must be a non-empty subset of {list(FORMATS)}, got {sorted(requested)}")
    for name, value, low in (("batch_size", batch_size, 1), ("threads", threads, 1)):
        if not isinstance(value, int) or isinstance(value, bool) or value < low:
            raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")
    if workers is not None and (not isinstance(workers, int) or workers < 1):
        raise ValueError(f"workers must be a positive integer or None, got {workers!r}")
    if not (gpus_per_worker >= 0 and cpus_per_worker > 0 and math.isfinite(gpus_per_worker + cpus_per_worker)):
        raise ValueError(f"gpus_per_worker must be >= 0 and cpus_per_worker > 0, "
                         f"got {gpus_per_worker}, {cpus_per_worker}")
    from fastcell.io.sources._files import MAX_PIXELS, check_max_pixels

    max_pixels = check_max_pixels(MAX_PIXELS if max_pixels is None else (max_pixels or None))
    plan = resolve_source(source, recursive, out_dir)  # fails fast, before Ray starts
    ray = _ray()
    from fastcell.distributed._worker import model_bundle

    bundle = model_bundle(model)  # an unknown model fails here, before Ray starts
    segment, keep_image = _needs(formats, SimpleNamespace(crops_masked=crops_masked, coco_masks=coco_masks))
    writer_options = {"formats": formats, "image_format": image_format, "label_format": labels_format,
                      "coco_segmentation": coco_masks, "yolo_scores": yolo_scores, "crops_masked": crops_masked}
    started = not ray.is_initialized()
    if started:
        if address is not None:
            _check_reachable(address)
        ray.init(address=address, num_cpus=num_cpus if address is None else None, include_dashboard=False,
                 logging_level=logging.ERROR)
    try:
        # The model goes into the object store once; each node fetches it once.
        config = {"bundle": ray.put(bundle), "device": device, "precision": precision, "segment": segment,
                  "keep_image": keep_image, "batch_size": batch_size, "overrides": dict(overrides or {}),
                  "threads": threads, "num_threads": math.ceil(cpus_per_worker) if gpus_per_worker == 0 else None,
                  "out_dir": str(Path(out_dir).absolute()), "writer": {**writer_options, "workers": threads},
                  "stall_timeout": _stall_timeout(), "max_pixels": max_pixels}
        return _execute(ray, plan, os.fspath(source), Path(out_dir), config, writer_options, workers=workers,
                        gpus_per_worker=gpus_per_worker, cpus_per_worker=cpus_per_worker, overwrite=overwrite,
                        progress=progress, on_image=on_image)
    finally:
        if started:
            ray.shutdown()


def _check_reachable(address: str, timeout: float = 10.0) -> None:
    """Fail in seconds on an address nothing listens at (``ray.init`` keeps retrying for minutes)."""
    import socket

    target = address.split("://", 1)[-1]
    host, sep, port = target.rpartition(":")
    if address in ("auto", "local") or not sep or not port.isdigit():
        return  # Ray resolves these itself, and fails fast when there is no cluster
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=timeout).close()
    except OSError as err:
        raise ConnectionError(f"cannot reach a Ray cluster at {address!r}: {err} (is 'ray start --head' "
                              "running there, and the port open?)") from None


def _stall_timeout() -> float:
    from fastcell.io.plan import READ_STALL_TIMEOUT

    return READ_STALL_TIMEOUT


def _open_writer(ray: Any, source: str, out_dir: Path, config: dict[str, Any], writer_options: dict[str, Any], *,
                 gpus_per_worker: float, cpus_per_worker: float, overwrite: bool) -> Any:
    """The driver's AnnotationWriter: it holds the folder's lock and writes ``run.json``, with the
    settings single-process annotate stores, so either engine resumes the other's folder."""
    from fastcell.io.plan import source_setting as _source_setting
    from fastcell.distributed._sources import is_uri
    from fastcell.distributed._worker import probe
    from fastcell.io.writers import AnnotationWriter

    # The backend name goes into run.json; ask a worker (the driver may have no GPU, or no backend).
    resources = {"num_cpus": cpus_per_worker, "num_gpus": gpus_per_worker}
    have = ray.cluster_resources()
    for name, need in (("CPU", cpus_per_worker), ("GPU", gpus_per_worker)):
        if need > have.get(name, 0):  # Ray would wait forever for an actor that fits nowhere
            raise ValueError(f"each worker asks for {need:g} {name}(s), but the cluster has "
                             f"{have.get(name, 0):g}; lower --{name.lower()}s-per-worker or add nodes")
    try:
        info = ray.get(ray.remote(**resources)(probe).remote(config))
    except ray.exceptions.RayTaskError as err:  # one line, not the worker's traceback
        cause = err.cause if getattr(err, "cause", None) is not None else err
        raise RuntimeError(f"a worker cannot open the model on device {config['device']!r}: "
                           f"{type(cause).__name__}: {str(cause).strip().splitlines()[-1]}") from None
    settings = {"model": info["model"], "model_sha256": info["model_sha256"], "backend": info["backend"],
                "overrides": config["overrides"]}  # the keys single-process annotate stores
    # The source too, as single-process annotate stores it: neither engine mixes two sources in one
    # folder, and either resumes the other's.
    settings["source"] = source if is_uri(source) else _source_setting(source)
    return AnnotationWriter(out_dir, tuple(info["classes"]), settings=settings, overwrite=overwrite, workers=0,
                            **writer_options)


def _execute(ray: Any, plan: Any, source: str, out_dir: Path, config: dict[str, Any],
             writer_options: dict[str, Any], *, workers: int | None, gpus_per_worker: float,
             cpus_per_worker: float, overwrite: bool, progress: bool, on_image: Callable | None) -> RunSummary:
    from fastcell.io.plan import Progress as _Progress
    from fastcell.distributed._parquet import DETECTIONS_FILE, write_detections
    from fastcell.distributed._worker import cells_path, finished

    writer = _open_writer(ray, source, out_dir, config, writer_options, gpus_per_worker=gpus_per_worker,
                          cpus_per_worker=cpus_per_worker, overwrite=overwrite)
    summary = RunSummary(out_dir=out_dir, plan=plan)
    with writer:
        for stale in (out_dir / ".fastcell" / "tmp").glob("cells-*"):  # a killed worker's; none is running
            stale.unlink(missing_ok=True)
        todo = [i for i, item in enumerate(plan.items) if not finished(writer, item.key)]
        summary.already = len(plan.items) - len(todo)
        bar = _Progress(len(plan.items), summary.already, quiet=not progress)
        start = time.perf_counter()
        collector = _Collector(plan, summary, bar, on_image)
        try:
            if todo:
                capacity = _default_workers(ray, gpus_per_worker, cpus_per_worker)
                if workers and workers > capacity:  # the pool would wait for actors that never fit
                    log.warning("fastcell: the cluster holds %d worker(s) of %g CPU / %g GPU; starting %d, not %d",
                                capacity, cpus_per_worker, gpus_per_worker, capacity, workers)
                dataset, blocks = _dataset(ray, plan, todo, config["batch_size"], min(workers or capacity, capacity))
                # no more actors than blocks: an actor without a block would only load the model
                n_workers = min(workers or capacity, capacity, blocks)
                from fastcell.distributed._worker import AnnotateActor

                # Ray Data restarts a dead actor and retries its tasks (max_restarts=-1,
                # max_task_retries=-1 for actor pools); what a killed attempt finished is skipped.
                results = dataset.map_batches(
                    AnnotateActor, fn_constructor_kwargs={"config": config}, batch_size=config["batch_size"],
                    batch_format="numpy", compute=ray.data.ActorPoolStrategy(size=n_workers),
                    num_cpus=cpus_per_worker, num_gpus=gpus_per_worker or None)
                collector.consume(results)
                unseen = [key for key in collector.done if not finished(writer, key)]
                if unseen:  # a worker wrote where the driver cannot see: OUT is not one folder for all nodes
                    raise RuntimeError(
                        f"{len(unseen)} image(s) reported finished are not in {out_dir} as the driver sees it "
                        f"(e.g. {unseen[0]}): the output folder must be a file system every node mounts at "
                        "the same path")
        except Exception as err:  # noqa: BLE001 - a failed run keeps what it finished; the rerun resumes
            summary.error = err
        finally:
            bar.close()
        summary.failed = list(plan.skipped) + [collector.failed[i] for i in sorted(collector.failed)]
        totals = writer.finish(plan.items, summary.failed)
        recorded = [item for item in plan.items if writer.is_done(item.key)]
        frames = [(item.name, cells_path(out_dir, item.key) if cells_path(out_dir, item.key).is_file() else None)
                  for item in recorded]
        summary.detections = write_detections(out_dir / DETECTIONS_FILE, frames, writer.classes)
    summary.images, summary.cells = totals.images, totals.cells
    summary.elapsed = time.perf_counter() - start
    return summary


class _Collector:
    """Consumes the actors' status rows on the driver as they stream in."""

    def __init__(self, plan: Any, summary: RunSummary, bar: Any, on_image: Callable | None) -> None:
        self.plan, self.summary, self.bar, self.on_image = plan, summary, bar, on_image
        self.failed: dict[int, tuple[str, str]] = {}  # source index → (path, reason)
        self.done: list[str] = []  # keys reported finished
        self._reported: set[str] = set()

    def consume(self, results: Any) -> None:
        batches = iter(results.iter_batches(batch_size=None, batch_format="pandas"))
        try:
            for batch in batches:
                for row in batch.to_dict("records"):
                    self._row(row)
        finally:  # stopping early (an error, on_image raising) stops the actors now, not when collected
            close = getattr(batches, "close", None)
            if close is not None:
                close()

    def _row(self, row: dict[str, Any]) -> None:
        if row["worker"] not in self.summary.workers:
            self.summary.workers.append(row["worker"])
        if row["key"] in self._reported:  # Ray keeps one attempt's output per task; never count twice
            raise RuntimeError(f"image {row['key']} was reported twice")
        self._reported.add(row["key"])
        index = int(row["index"])
        if row["status"] == "failed":
            self.failed[index] = (self.plan.paths[index], row["reason"])
        else:
            self.done.append(row["key"])
            self.summary.annotated += 1
        self.bar.update(max(int(row["cells"]), 0))
        if self.on_image is not None:
            self.on_image(row)


def _default_workers(ray: Any, gpus_per_worker: float, cpus_per_worker: float) -> int:
    resources = ray.cluster_resources()
    if gpus_per_worker:
        return max(1, int(resources.get("GPU", 0) // gpus_per_worker))
    return max(1, int(resources.get("CPU", 1) // cpus_per_worker))


def _dataset(ray: Any, plan: Any, todo: list[int], batch_size: int, n_workers: int) -> tuple[Any, int]:
    """The unfinished images as a Ray Dataset of blocks small enough to spread over every actor,
    and the number of blocks."""
    import pyarrow as pa

    context = ray.data.DataContext.get_current()
    context.enable_progress_bars = False  # ours counts images and cells, and knows the earlier runs
    context.print_on_execution_start = False
    logging.getLogger("ray.data").setLevel(logging.ERROR)  # plan and "finished" lines: not the user's concern
    items = [plan.items[i] for i in todo]
    table = pa.table({
        "index": pa.array(todo, pa.int64()),
        "path": [plan.paths[i] for i in todo],
        "key": [it.key for it in items],
        "name": [it.name for it in items],
        "source_format": [it.source_format or "" for it in items],
    })
    # Blocks of whole batches, at least ~4 per actor so none sits idle, at most 256 images each.
    per_block = max(1, math.ceil(len(todo) / (4 * n_workers)))
    per_block = min(max(batch_size, math.ceil(per_block / batch_size) * batch_size), max(256, batch_size))
    blocks = [table.slice(i, per_block) for i in range(0, len(todo), per_block)]
    return ray.data.from_arrow(blocks), len(blocks)
