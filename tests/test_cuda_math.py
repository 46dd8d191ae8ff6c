"""The per-element code of the CUDA twins, run on the CPU against the C++ core.

The CUDA kernels call FASTCELL_HD functions from csrc/core/*_math.hpp (letterbox_pixel, decode_cell)
for every output element. Compiled here by the host C++ compiler into a small harness (same flags
that matter as the core: no FMA contraction), they must reproduce fastcell.ops bit for bit. That
checks, on a machine without a GPU, the arithmetic each GPU thread performs; the kernels' indexing
and compaction are checked against the CPU in tests/test_gpu.py where a GPU is present.
"""

from __future__ import annotations

import ctypes
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from fastcell import ops
from fastcell.reference.image import letterbox_geometry

REPO = Path(__file__).resolve().parents[1]

HARNESS = r"""
#include <cstdint>
#include "core/decode_math.hpp"
#include "core/letterbox_math.hpp"

using namespace fastcell::core;

template <typename T>
static void letterbox_all(const T* img, int h, int w, int c, int size, int new_w, int new_h, int pad_x, int pad_y,
                          float pad, float norm, float* out) {
  LetterboxSampling s{w, h, c, static_cast<std::ptrdiff_t>(w) * c, 1.0 / (static_cast<double>(new_w) / w),
                      1.0 / (static_cast<double>(new_h) / h), norm};
  const long plane = static_cast<long>(size) * size;
  for (int y = 0; y < size; ++y)
    for (int x = 0; x < size; ++x) {
      float rgb[3] = {pad, pad, pad};
      const int rx = x - pad_x, ry = y - pad_y;
      if (rx >= 0 && ry >= 0 && rx < new_w && ry < new_h) letterbox_pixel(img, s, rx, ry, rgb);
      for (int p = 0; p < 3; ++p) out[p * plane + static_cast<long>(y) * size + x] = rgb[p];
    }
}

extern "C" void letterbox_u8(const std::uint8_t* img, int h, int w, int c, int size, int new_w, int new_h,
                             int pad_x, int pad_y, float pad, float* out) {
  letterbox_all(img, h, w, c, size, new_w, new_h, pad_x, pad_y, pad, 1.0f / 255, out);
}

extern "C" void letterbox_u16(const std::uint16_t* img, int h, int w, int c, int size, int new_w, int new_h,
                              int pad_x, int pad_y, float pad, float* out) {
  letterbox_all(img, h, w, c, size, new_w, new_h, pad_x, pad_y, pad, 1.0f / 65535, out);
}

// Image 0 of one head, in the CPU's order (anchor, then cells row-major), as the CUDA kernel visits it.
extern "C" int decode_head(const float* head, int height, int width, int num_anchors, int num_classes,
                           double stride, const float* anchors, double threshold, float* boxes, float* scores,
                           int* classes) {
  const long plane = static_cast<long>(height) * width;
  const float cutoff = decode_objectness_cutoff(threshold);
  int kept = 0;
  for (int a = 0; a < num_anchors; ++a)
    for (long i = 0; i < plane; ++i) {
      DecodedCell cell;
      if (!decode_cell(head + a * (num_classes + 5) * plane, plane, i, width, num_classes, stride, anchors[2 * a],
                       anchors[2 * a + 1], cutoff, threshold, cell)) continue;
      boxes[4 * kept] = cell.box.x1, boxes[4 * kept + 1] = cell.box.y1;
      boxes[4 * kept + 2] = cell.box.x2, boxes[4 * kept + 3] = cell.box.y2;
      scores[kept] = cell.score;
      classes[kept] = cell.class_id;
      ++kept;
    }
  return kept;
}
"""


@pytest.fixture(scope="module")
def harness(tmp_path_factory: pytest.TempPathFactory) -> ctypes.CDLL:
    compiler = shutil.which("g++") or shutil.which("c++") or shutil.which("clang++")
    if compiler is None:
        pytest.skip("no C++ compiler to build the harness of the shared CUDA/CPU math")
    out = tmp_path_factory.mktemp("cuda_math")
    source = out / "harness.cpp"
    source.write_text(HARNESS)
    library = out / "harness.so"
    subprocess.run([compiler, "-std=c++17", "-O2", "-ffp-contract=off", "-fno-trapping-math", "-Wall", "-Wextra",
                    "-Werror", "-shared", "-fPIC", f"-I{REPO / 'csrc'}", str(source), "-o", str(library)],
                   check=True, capture_output=True)
    lib = ctypes.CDLL(str(library))
    lib.decode_head.restype = ctypes.c_int
    return lib


def ptr(a: np.ndarray) -> ctypes.c_void_p:
    return ctypes.c_void_p(a.ctypes.data)


def harness_letterbox(lib: ctypes.CDLL, image: np.ndarray, size: int = 416, pad_value: float = 114) -> np.ndarray:
    image = np.ascontiguousarray(image)
    h, w = image.shape[:2]
    c = 1 if image.ndim == 2 else image.shape[2]
    _, new_w, new_h, pad_x, pad_y = letterbox_geometry(w, h, size)
    out = np.empty((3, size, size), np.float32)
    fn = lib.letterbox_u8 if image.dtype == np.uint8 else lib.letterbox_u16
    fn(ptr(image), h, w, c, size, new_w, new_h, pad_x, pad_y, ctypes.c_float(np.float32(pad_value) / np.float32(255)),
       ptr(out))
    return out


def test_letterbox_pixel_equals_cpu_on_real_images(harness) -> None:
    import cv2

    paths = sorted((REPO / "tests" / "data" / "bccd").glob("*.jpg"))
    if not paths:
        pytest.skip("no sample images in tests/data/bccd")
    for path in paths:
        image = cv2.imread(str(path), cv2.IMREAD_COLOR)
        np.testing.assert_array_equal(harness_letterbox(harness, image), ops.letterbox(image)[0])


@pytest.mark.parametrize("seed", range(8))
def test_letterbox_pixel_equals_cpu_on_random_frames(harness, seed: int) -> None:
    rng = np.random.default_rng(seed)
    h, w = (int(v) for v in rng.integers(1, 700, size=2))
    channels = [None, 3, 4][seed % 3]
    dtype = np.uint16 if seed % 4 == 3 else np.uint8
    shape = (h, w) if channels is None else (h, w, channels)
    image = rng.integers(0, np.iinfo(dtype).max, size=shape, dtype=dtype, endpoint=True)
    size = int(rng.choice([416, 64, 7]))
    np.testing.assert_array_equal(harness_letterbox(harness, image, size), ops.letterbox(image, size)[0])


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("threshold", [0.0, 0.25, 0.8])
def test_decode_cell_equals_cpu(harness, seed: int, threshold: float) -> None:
    rng = np.random.default_rng(seed)
    classes = int(rng.integers(1, 6))
    cells = int(rng.choice([13, 26]))
    head = rng.normal(0, 3, size=(1, 3 * (classes + 5), cells, cells)).astype(np.float32)
    head[0, 2::classes + 5] *= 4  # wild tw/th: exercises the exp clamp
    anchors = rng.uniform(5, 150, size=(3, 2)).astype(np.float32)
    stride = 416.0 / cells
    n = 3 * cells * cells
    boxes, scores = np.empty((n, 4), np.float32), np.empty(n, np.float32)
    class_ids = np.empty(n, np.int32)
    kept = harness.decode_head(ptr(head), cells, cells, 3, classes, ctypes.c_double(stride), ptr(anchors),
                               ctypes.c_double(threshold), ptr(boxes), ptr(scores), ptr(class_ids))
    cpu_boxes, cpu_scores, cpu_classes = ops.decode([head], [stride], [anchors], classes, threshold)[0]
    assert kept == len(cpu_scores) > 0
    np.testing.assert_array_equal(boxes[:kept], cpu_boxes)
    np.testing.assert_array_equal(scores[:kept], cpu_scores)
    np.testing.assert_array_equal(class_ids[:kept], cpu_classes)


# --- the CUDA bindings check their arguments before looking for a device ------------------------------
def _cuda_core():
    from fastcell._core_loader import core

    if not core.has_cuda():
        pytest.skip("this build has no CUDA kernels (no CUDA toolkit when it was compiled)")
    return core


_NO_BOXES = (np.zeros((0, 4), np.float32), np.zeros(0, np.float32))


@pytest.mark.parametrize("call, message", [
    (lambda c: c.cuda_letterbox_batch(np.zeros((0, 4, 4, 3), np.uint8), 416, 114.0), r"frames must be \(N>=1, H>=1"),
    (lambda c: c.cuda_letterbox_batch(np.zeros((1, 4, 4, 3), np.uint8), size=0, pad_value=114.0), r"size must be in \[1, 16384\]"),
    (lambda c: c.cuda_letterbox_batch(np.zeros((1, 4, 4, 3), np.uint8), size=416, pad_value=300), "pad_value must be"),
    (lambda c: c.cuda_letterbox_batch_device(0, -1, 4, 4, 3, 12, 48, 416, 114.0, 0, 0), "count must be"),
])
def test_cuda_bindings_refuse_bad_arguments_with_or_without_a_gpu(call, message) -> None:
    with pytest.raises(ValueError, match=message):
        call(_cuda_core())


_HEAD = np.zeros((1, 18, 2, 2), np.float32)
_ANCHORS = np.ones((3, 2), np.float32)
_BOXES = np.array([[0, 0, 10, 10], [5, 5, 15, 15]], np.float32)
_SCORES = np.array([0.9, 0.8], np.float32)
_IMAGE = np.zeros((4, 4, 3), np.uint8)


# (name of the function in both bindings, arguments): each one refused before any device is touched.
@pytest.mark.parametrize("name, args", [
    ("decode", ([], [], [], 1, 0.25)),
    ("decode", ([_HEAD], [8, 16], [_ANCHORS], 1, 0.25)),
    ("decode", ([_HEAD], [8], [_ANCHORS], 2**31 - 1, 0.25)),
    ("decode", ([_HEAD], [8], [_ANCHORS], 2, 0.25)),
    ("decode", ([_HEAD], [8], [np.full((3, 2), 3e38, np.float32)], 1, 0.25)),
    ("decode", ([_HEAD], [3e38], [_ANCHORS], 1, 0.25)),
    ("decode", ([_HEAD[0]], [8], [_ANCHORS], 1, 0.25)),
    ("decode", ([_HEAD], [8], [_ANCHORS], 1, float("nan"))),
    ("decode", (5, [8], [_ANCHORS], 1, 0.25)),
    ("nms", (np.zeros((2, 3), np.float32), _SCORES, 0.5)),
    ("nms", (np.full((2, 4), np.nan, np.float32), _SCORES, 0.5)),
    ("nms", (_BOXES * np.float32(1e19), _SCORES, 0.5)),
    ("nms", (_BOXES, _SCORES[:1], 0.5)),
    ("nms", (_BOXES, _SCORES, 0.5, np.array([0.0, 1.0]))),
    ("nms", (_BOXES, _SCORES, 0.5, np.array([0, 2**40]))),
    ("nms", (_BOXES, _SCORES, float("inf"))),
    ("gbciou_merge", (_BOXES, _SCORES, None, 0.5, "chain", 0.5)),
    ("gbciou_merge", (_BOXES, _SCORES, None, float("nan"), "multi", 0.5)),
    ("segment_cells", (_IMAGE, *_NO_BOXES, (0, 0, 0), (999, 0, 0))),
    ("segment_cells", (_IMAGE, *_NO_BOXES, (0, 0, 0), None)),
    ("segment_cells", (_IMAGE, *_NO_BOXES, (0, 0), (1, 2, 3))),
    ("segment_cells", (_IMAGE, *_NO_BOXES, None, None, "square")),
    ("segment_cells", (_IMAGE, *_NO_BOXES, None, None, "circle", (0, 0, 300))),
    ("segment_cells", (_IMAGE, *_NO_BOXES, None, None, "circle", "red")),
])
def test_cuda_bindings_refuse_what_the_cpu_refuses_with_the_same_message(name, args) -> None:
    core = _cuda_core()
    with pytest.raises((TypeError, ValueError)) as cpu:
        getattr(core, name)(*args)
    with pytest.raises((TypeError, ValueError)) as gpu:
        getattr(core, "cuda_" + name)(*args)
    assert (type(gpu.value), str(gpu.value)) == (type(cpu.value), str(cpu.value))


@pytest.mark.parametrize("cpu, device", [
    (lambda c: c.decode([_HEAD], [8], [_ANCHORS], 2**31 - 1, 0.25),
     lambda c: c.cuda_decode_device([1], [_HEAD.shape], [8.0], [_ANCHORS], 2**31 - 1, 0.25, 0)),
    (lambda c: c.decode([_HEAD], [8], [_ANCHORS], 2, 0.25),
     lambda c: c.cuda_decode_device([1], [_HEAD.shape], [8.0], [_ANCHORS], 2, 0.25, 0)),
    (lambda c: c.decode([_HEAD], [8], [np.full((3, 2), 3e38, np.float32)], 1, 0.25),
     lambda c: c.cuda_decode_device([1], [_HEAD.shape], [8.0], [np.full((3, 2), 3e38, np.float32)], 1, 0.25, 0)),
    (lambda c: c.segment_cells(_IMAGE, *_NO_BOXES, (0, 0, 0), (999, 0, 0)),
     lambda c: c.cuda_segment_cells_device(1, 4, 4, 12, *_NO_BOXES, (0, 0, 0), (999, 0, 0))),
    (lambda c: c.segment_cells(_IMAGE, *_NO_BOXES, None, None, "circle", (0, 0, 300)),
     lambda c: c.cuda_segment_cells_device(1, 4, 4, 12, *_NO_BOXES, None, None, "circle", (0, 0, 300))),
])
def test_cuda_device_pointer_entries_refuse_with_the_cpu_message(cpu, device) -> None:
    core = _cuda_core()
    with pytest.raises((TypeError, ValueError)) as want:
        cpu(core)
    with pytest.raises((TypeError, ValueError)) as got:
        device(core)  # pointer 1 is never read: the arguments are refused first
    assert (type(got.value), str(got.value)) == (type(want.value), str(want.value))


def test_cuda_letterbox_of_no_frames_needs_no_device() -> None:
    params = _cuda_core().cuda_letterbox_batch_device(0, 0, 4, 4, 3, 12, 48, 416, 114.0, 0, 0)
    assert params.shape == (0, 5) and params.dtype == np.float32
