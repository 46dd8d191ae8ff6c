"""Input and output: frame sources (:mod:`fastcell.io.sources`) and annotation writers
(:mod:`fastcell.io.writers`)."""

from fastcell.io.sources import (
    IMAGE_EXTENSIONS,
    VIDEO_EXTENSIONS,
    Callback,
    Frames,
    ImageFiles,
    Pushed,
    Source,
    VideoCapture,
    array_frames,
    open_source,
    read_image,
)

__all__ = ["Source", "ImageFiles", "VideoCapture", "Frames", "Callback", "Pushed", "open_source", "read_image",
           "array_frames", "IMAGE_EXTENSIONS", "VIDEO_EXTENSIONS"]
