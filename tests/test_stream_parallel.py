"""Post-processing on a pool of threads: same Results, frame order, failures delivered after the
results before them; and the device-frames hook of the Annotator (``preprocess_infer``)."""

from __future__ import annotations

import threading

import numpy as np
import pytest

import fastcell
from fastcell import _parallel, ops
from fastcell.annotator import Annotator
from fastcell.pipeline import StreamError
from fastcell.runtime import open_backend
from fastcell.spec import ModelSpec


@pytest.fixture(scope="module")
def annotator(random_model_dir) -> Annotator:
    return Annotator(open_backend(ModelSpec.load(random_model_dir), "onnxruntime"))


def _frames(n: int) -> list[np.ndarray]:
    rng = np.random.default_rng(3)
    return [rng.integers(0, 256, (40 + 8 * (i % 3), 64, 3), dtype=np.uint8) for i in range(n)]


def _same(a, b) -> None:
    np.testing.assert_array_equal(a.boxes, b.boxes)
    np.testing.assert_array_equal(a.class_ids, b.class_ids)
    np.testing.assert_array_equal(a.labels, b.labels)
    np.testing.assert_array_equal(a.segmented, b.segmented)


@pytest.mark.parametrize("workers", [1, 2, 3])
@pytest.mark.parametrize("batch_size", [1, 5])
def test_pooled_post_processing_keeps_frame_order_and_results(annotator, workers: int, batch_size: int) -> None:
    frames = _frames(17)
    expected = annotator.batch(frames)
    assert sum(len(r) for r in expected) > 0  # the random model finds something to compare
    seen: set[str] = set()
    post = annotator.postprocess

    class Spy(Annotator):
        def postprocess(self, heads, params, frames, meta=None):
            seen.add(threading.current_thread().name)
            return post(heads, params, frames, meta)

    spy = Spy(annotator.backend, annotator.spec)
    with fastcell.stream(frames, spy, batch_size=batch_size, post_workers=workers) as stream:
        results = list(stream)
    assert stream.post_workers == workers
    assert [r.frame_index for r in results] == list(range(17))
    for r, e in zip(results, expected):
        _same(r, e)
    assert all(name.startswith("fastcell-post") for name in seen)
    if workers == 1:
        assert seen == {"fastcell-post"}  # the stream's own thread, no pool


def test_a_failing_chunk_ends_the_stream_after_the_results_before_it(annotator) -> None:
    post = annotator.postprocess

    class Broken(Annotator):
        def postprocess(self, heads, params, frames, meta=None):
            if any(m["frame_index"] == 9 for m in meta):
                raise MemoryError("chunk with frame 9 ran out")
            return post(heads, params, frames, meta)

    broken = Broken(annotator.backend, annotator.spec)
    delivered = []
    stream = fastcell.stream(_frames(16), broken, batch_size=4, post_workers=2)
    with pytest.raises(StreamError) as info:
        for r in stream:
            delivered.append(r.frame_index)
    assert isinstance(info.value.__cause__, MemoryError)
    # everything before the failing chunk arrives, in order (batch 8..11 is cut into [8, 9] and
    # [10, 11]; a batch the capture thread left short may start the chunk at 9)
    assert delivered in (list(range(8)), list(range(9)))


@pytest.mark.parametrize("n, workers", [(1, 4), (8, 3), (32, 14), (5, 5), (7, 1)])
def test_split_batch_covers_every_frame_once_in_order(n: int, workers: int) -> None:
    chunks = _parallel.split_batch(n, workers)
    assert [i for lo, hi in chunks for i in range(lo, hi)] == list(range(n))
    assert len(chunks) <= workers and all(hi > lo for lo, hi in chunks)


@pytest.mark.parametrize("cores, expected", [(1, 1), (2, 1), (3, 1), (4, 2), (16, 14), (128, 32)])
def test_default_post_workers_leave_two_cores_to_the_other_stages(monkeypatch, cores: int, expected: int) -> None:
    monkeypatch.setattr(_parallel, "host_threads", lambda: cores)
    assert _parallel.default_post_workers() == expected


class DeviceFrames:
    """A backend with the cuda backend's ``infer_frames`` hook, letterboxing on the CPU instead."""

    def __init__(self, inner, take: bool) -> None:
        self.inner, self.take, self.calls = inner, take, 0
        self.name, self.precision, self.spec = "fake-gpu", inner.precision, inner.spec

    def infer(self, batch):
        return self.inner.infer(batch)

    def infer_frames(self, frames, pad_value=None):
        if not self.take:
            return None
        self.calls += 1
        batch, params = ops.letterbox_batch(list(frames), size=self.spec.input_size, pad_value=pad_value)
        return self.inner.infer(batch), params

    def close(self) -> None:
        pass


@pytest.mark.parametrize("take", [True, False])
def test_preprocess_infer_uses_the_backends_device_path_when_it_takes_the_frames(annotator, take: bool) -> None:
    frames = _frames(6)
    backend = DeviceFrames(annotator.backend, take)
    gpu_like = Annotator(backend, annotator.spec, max_batch=4)
    for r, e in zip(gpu_like.batch(frames), annotator.batch(frames)):
        _same(r, e)
    assert backend.calls == (2 if take else 0)  # chunks of max_batch 4: 4 + 2 frames
    with fastcell.stream(frames, gpu_like, batch_size=3, post_workers=2) as stream:
        for r, e in zip(stream, annotator.batch(frames)):
            _same(r, e)
