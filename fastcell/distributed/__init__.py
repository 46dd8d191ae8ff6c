"""``fastcell annotate`` beyond one machine, on Ray Data (the ``fastcell[ray]`` extra).

    from fastcell.distributed import annotate
    summary = annotate("s3://lab/run42/*.png", "/mnt/shared/run42", workers=16, gpus_per_worker=0.5)

Each Ray actor loads the model once and runs the single-process pipeline (:func:`fastcell.stream`
into :class:`~fastcell.io.writers.AnnotationWriter`) on batches of images; the driver merges the
run-level files (COCO JSON, CSV, ``yolo/classes.txt``) from the per-image records in source order,
so the folder holds the same annotations as a single-process run of the same input, plus
``detections.parquet`` (one row per cell). A rerun skips finished images; an actor killed mid-run
is restarted by Ray and its tasks retried, and no image is lost or written twice (see
:mod:`fastcell.distributed._worker`). The same from the command line::

    fastcell annotate SRC --out DIR --engine ray [--address ADDR] [--workers N] [--gpus-per-worker G]

Importing this package does not import Ray; calling :func:`annotate` without it raises an
ImportError that says what to install.
"""

from fastcell.distributed._parquet import DETECTIONS_FILE
from fastcell.distributed._run import RunSummary, annotate
from fastcell.distributed._sources import resolve_source

__all__ = ["annotate", "RunSummary", "resolve_source", "DETECTIONS_FILE"]
