"""Annotation files from :class:`~fastcell.results.Result` objects.

Two layers:

* :mod:`fastcell.io.writers.formats` — pure functions, one ``Result`` → one format's content
  (YOLO text, Pascal VOC XML, COCO entries with RLE or polygon masks, CSV rows, 16-bit label
  image, overlay), with the coordinate conventions written down at the top of that module;
* :class:`AnnotationWriter` — an output folder written atomically and resumably::

      OUT/yolo/<key>.txt  yolo/classes.txt  yolo/data.yaml
      OUT/voc/<key>.xml
      OUT/labels/<key>.png            16-bit instance labels (or .tif)
      OUT/segmented/<key>.<png|jpg>   debris removed
      OUT/overlays/<key>.<png|jpg>    outlines, boxes, class names
      OUT/crops/<key>/<i>_<class>.<png|jpg>
      OUT/annotations.json            COCO (RLE masks by default)
      OUT/cells.csv                   one row per cell
      OUT/failed.txt                  sources that could not be read or were skipped, with reasons
      OUT/.fastcell/                  run settings, per-frame records (what makes it resumable), tmp/

File names in the text files are escaped as :func:`fastcell.io._names.text_name` says (bytes that
are not UTF-8, control characters as ``\\xHH``; backslashes doubled).

Writing COCO masks needs no pycocotools; the files load in it.
"""

from fastcell.io.writers import formats
from fastcell.io.writers._folder import (
    COCO_FILE,
    CSV_FILE,
    DEFAULT_FORMATS,
    FAILED_FILE,
    FORMATS,
    RESERVED_KEYS,
    AnnotationWriter,
    Item,
    SettingsMismatch,
    Totals,
    failed_line,
    owned_paths,
    unique_keys,
)
from fastcell.io.writers._rle import compress_counts, encode_mask, rle_counts

__all__ = [
    "formats",
    "AnnotationWriter",
    "Item",
    "Totals",
    "SettingsMismatch",
    "FORMATS",
    "DEFAULT_FORMATS",
    "COCO_FILE",
    "CSV_FILE",
    "FAILED_FILE",
    "RESERVED_KEYS",
    "unique_keys",
    "owned_paths",
    "failed_line",
    "encode_mask",
    "rle_counts",
    "compress_counts",
]
