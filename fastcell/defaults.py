"""The defaults of fastcell's settings, each defined here once.

A model's own values live in its ``model.json`` (read by :mod:`fastcell.spec`); these are what a
setting is when the JSON leaves it out, and what code that runs before a model exists (export,
training, the kernels in :mod:`fastcell.ops`) starts from. Nothing else in fastcell writes these
numbers: a grep for ``0.25`` or ``416`` finds this file.
"""

from __future__ import annotations

__all__ = ["SCORE", "NMS_IOU", "GBCIOU", "MERGE_IOU", "MERGE", "MAX_DETECTIONS", "INPUT_SIZE", "PAD_VALUE",
           "TRAIN_CELL_SIZE", "INPUT_NAME", "OUTPUT_NAMES", "MODEL_FILE", "JPEG_EXTENSIONS", "IMAGE_EXTENSIONS",
           "VIDEO_EXTENSIONS"]

#: keep a candidate when objectness × class probability ``>= SCORE``
SCORE = 0.25
#: NMS suppresses a box whose IoU with a kept box is ``> NMS_IOU``
NMS_IOU = 0.45
#: GBCIOU merges two boxes when their penalty ``(E - Union) / E < GBCIOU``
GBCIOU = 0.5
#: in ``"multi"`` mode a box merges only into one it overlaps with IoU ``> MERGE_IOU``
MERGE_IOU = 0.5
#: the GBCIOU merge mode: "multi", "single" or "none"
MERGE = "multi"
#: at most this many boxes per image (highest scores first)
MAX_DETECTIONS = 300

#: the network's square input side in pixels (a multiple of 32; the paper's 416)
INPUT_SIZE = 416
#: letterbox padding grey level, 8-bit units
PAD_VALUE = 114
#: the cell diameter, in network-input pixels, a model knows best (its training scale; see fastcell.scale)
TRAIN_CELL_SIZE = 66.0

#: the ONNX model's input tensor: (N, 3, S, S) float32 RGB in [0, 1]
INPUT_NAME = "images"
#: the ONNX model's outputs, stride 32 head first
OUTPUT_NAMES = ("p5", "p4")
#: the float model's file name beside ``model.json``
MODEL_FILE = "model.onnx"

#: file name extensions of JPEG files (lower case): their annotated images are written as JPEG too
JPEG_EXTENSIONS = frozenset({".jpg", ".jpeg", ".jpe"})
#: file name extensions read as still images (lower case), by :mod:`fastcell.io`, the data loaders
#: and int8 calibration
IMAGE_EXTENSIONS = JPEG_EXTENSIONS | {".png", ".bmp", ".dib", ".tif", ".tiff", ".webp", ".jp2", ".pbm", ".pgm",
                                      ".ppm", ".pnm"}
#: file name extensions opened as videos (lower case)
VIDEO_EXTENSIONS = frozenset({".mp4", ".avi", ".mov", ".mkv", ".m4v", ".wmv", ".mpg", ".mpeg", ".webm",
                              ".flv", ".mjpeg", ".mjpg", ".gif", ".ts"})
