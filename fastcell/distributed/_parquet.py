"""The detections table: one Parquet row per cell, beside the COCO file.

For millions of cells a COCO JSON is too big to load at once; a Parquet table is read by pandas,
pyarrow, Polars, DuckDB and Spark column by column. Rows are in the run's image order (the COCO
``image_id`` order) and, within an image, in detection order (descending score), so the file is the
same for the same input however the work was split.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any, Iterable

__all__ = ["DETECTIONS_FILE", "SCHEMA_FIELDS", "write_detections"]

log = logging.getLogger("fastcell")

DETECTIONS_FILE = "detections.parquet"
#: column → meaning (the schema, also written into the file's metadata)
SCHEMA_FIELDS = {
    "image_id": "COCO image id in annotations.json (1-based, run order)",
    "image": "the image's name (COCO file_name): its path relative to the source folder",
    "cell": "index of the cell within its image (descending score), as in cells.csv",
    "class_id": "0-based class index (COCO category_id - 1)",
    "class": "class name",
    "score": "objectness x class probability, in [0, 1]",
    "x1": "box left, original-image pixels", "y1": "box top", "x2": "box right", "y2": "box bottom",
    "area": "mask pixels when masks were computed, else box area (as COCO area)",
}
_ROWS_PER_GROUP = 1 << 17


def _schema() -> Any:
    import pyarrow as pa

    types = {"image_id": pa.int64(), "image": pa.string(), "cell": pa.int32(), "class_id": pa.int32(),
             "class": pa.string(), "score": pa.float32(), "x1": pa.float32(), "y1": pa.float32(),
             "x2": pa.float32(), "y2": pa.float32(), "area": pa.float64()}
    fields = [pa.field(name, types[name], nullable=False, metadata={"description": text})
              for name, text in SCHEMA_FIELDS.items()]
    return pa.schema(fields, metadata={"format": "fastcell-detections/1"})


def write_detections(path: Path, frames: Iterable[tuple[str, Path | None]], classes: tuple[str, ...]) -> int:
    """Write the table from per-image detection files, atomically; return the number of cells.

    Parameters
    ----------
    path : Path
        The Parquet file to write.
    frames : iterable of (str, Path or None)
        Every image in the COCO file, in its order: the image's name and its detections file
        (``None`` when an earlier single-process run recorded it without one: such an image is
        left out of the table, with a warning).
    classes : tuple of str
        Class names by class id.
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    schema = _schema()
    tmp_dir = path.parent / ".fastcell" / "tmp"  # the writer's temporaries, cleared when a run starts
    tmp_dir.mkdir(parents=True, exist_ok=True)
    tmp = tmp_dir / f"{path.name}.{os.getpid()}"
    columns: dict[str, list] = {name: [] for name in SCHEMA_FIELDS}
    total = missing = 0
    with pq.ParquetWriter(tmp, schema, compression="zstd") as writer:
        for image_id, (name, cells_file) in enumerate(frames, start=1):
            if cells_file is None:
                missing += 1
                continue
            cells = json.loads(cells_file.read_text())
            n = len(cells["class_id"])
            columns["image_id"] += [image_id] * n
            columns["image"] += [name] * n
            columns["cell"] += range(n)
            columns["class_id"] += cells["class_id"]
            columns["class"] += [classes[c] for c in cells["class_id"]]
            columns["score"] += cells["score"]
            for k, axis in enumerate(("x1", "y1", "x2", "y2")):
                columns[axis] += [b[k] for b in cells["box"]]
            columns["area"] += cells["area"]
            total += n
            if len(columns["cell"]) >= _ROWS_PER_GROUP:
                writer.write_table(pa.table(columns, schema=schema))
                columns = {name: [] for name in SCHEMA_FIELDS}
        writer.write_table(pa.table(columns, schema=schema))
    tmp.replace(path)
    if missing:
        log.warning("fastcell: %d image(s) finished by a single-process run have no detections file and are "
                    "left out of %s (they are in the COCO file)", missing, path.name)
    return total
