"""fastcell.stream: order, drop policy, shutdown, error propagation, stalls, and every kind of source."""

from __future__ import annotations

import re
import threading
import time

import cv2
import numpy as np
import pytest

import fastcell
from fastcell.annotator import Annotator
from fastcell.io.sources import Pushed, Source, open_source
from fastcell.pipeline import StreamError, StreamStalled
from fastcell.runtime import open_backend
from fastcell.spec import ModelSpec

WAIT = 30.0  # generous bound for "stops promptly" checks; never a speed assertion


@pytest.fixture(scope="module")
def annotator(random_model_dir) -> Annotator:
    return Annotator(open_backend(ModelSpec.load(random_model_dir), "onnxruntime"))


def _frames(n: int, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, (48 + 4 * i % 40, 64, 3), dtype=np.uint8) for i in range(n)]


def _threads_stop(stream) -> bool:
    for t in stream._threads:
        t.join(WAIT)
    return not any(t.is_alive() for t in stream._threads)


class BlockingSource(Source):
    """Yields ``n`` frames, then blocks (a frozen camera) until closed."""

    live = True

    def __init__(self, n: int) -> None:
        super().__init__()
        self.n = n
        self.name = "frozen-camera"
        self.released = threading.Event()

    def __iter__(self):
        for i, frame in enumerate(_frames(self.n)):
            yield frame, self.name, i, time.monotonic()
        self.released.wait()  # blocks like a hung cap.read()

    def close(self) -> None:
        self.released.set()


# -- order and results ---------------------------------------------------------------------------------
def test_results_come_in_frame_order_and_equal_the_annotator(annotator):
    frames = _frames(13)
    with fastcell.stream(frames, annotator, batch_size=4) as stream:
        results = list(stream)
    assert [r.frame_index for r in results] == list(range(13))
    expected = annotator.batch(frames)
    for r, e, f in zip(results, expected, frames):
        np.testing.assert_allclose(r.boxes, e.boxes, atol=1e-4)
        assert r.image is f and r.source == "list" and r.latency >= 0 and r.timestamp > 0
    assert stream.count == 13 and stream.dropped == 0
    assert stream.latency_p99 >= stream.latency_p50 > 0 and stream.fps > 0


def test_generator_callable_and_numpy_stack_sources(annotator):
    frames = _frames(5)
    from_gen = [r.frame_index for r in fastcell.stream((f for f in frames), annotator)]
    stack = np.stack([cv2.resize(f, (64, 48)) for f in frames])
    from_stack = [r.frame_index for r in fastcell.stream(stack, annotator)]
    it = iter(frames)
    from_call = [r.frame_index for r in fastcell.stream(lambda: next(it, None), annotator, drop=False)]
    assert from_gen == from_stack == from_call == list(range(5))


def test_pushed_source_from_an_acquisition_thread(annotator):
    source = Pushed(maxsize=100)
    frames = _frames(6)

    def acquire():
        for f in frames:
            source.push(f)
        source.end()

    threading.Thread(target=acquire).start()
    results = list(fastcell.stream(source, annotator, drop=False))
    assert [r.frame_index for r in results] == list(range(6))
    with pytest.raises(RuntimeError, match="after end"):
        source.push(frames[0])


def test_keep_image_false_drops_the_frame(annotator):
    (r,) = list(fastcell.stream(_frames(1), annotator, keep_image=False))
    assert r.image is None and r.labels is not None


# -- drop policy --------------------------------------------------------------------------------------
def test_files_and_iterables_never_drop_even_when_the_consumer_is_slow(annotator):
    results = []
    with fastcell.stream(_frames(12), annotator, batch_size=2, queue_size=2) as stream:
        for r in stream:
            time.sleep(0.02)
            results.append(r.frame_index)
    assert results == list(range(12)) and stream.dropped == 0


def test_live_source_behind_drops_oldest_and_counts_them(annotator):
    frames = _frames(200)
    it = iter(frames)
    got = []
    with fastcell.stream(lambda: next(it, None), annotator, queue_size=2) as stream:
        assert stream.live
        for r in stream:
            got.append(r.frame_index)
            time.sleep(0.005)
    assert stream.dropped > 0
    assert len(got) + stream.dropped == 200  # every frame is either delivered or counted
    assert got == sorted(got) and got[-1] == 199  # order kept; the newest frame is never the one dropped


def test_live_source_with_drop_disabled_keeps_every_frame(annotator):
    it = iter(_frames(30))
    with fastcell.stream(lambda: next(it, None), annotator, drop=False, queue_size=2) as stream:
        got = [r.frame_index for r in stream]
    assert got == list(range(30)) and stream.dropped == 0


# -- shutdown, errors, stalls ----------------------------------------------------------------------
def test_close_stops_every_thread_of_an_endless_source(annotator):
    frame = _frames(1)[0]
    stream = fastcell.stream(lambda: frame, annotator)
    for _, r in zip(range(3), stream):
        assert r.labels is not None
    stream.close()
    assert _threads_stop(stream)
    assert list(stream) == []  # a closed stream is exhausted


def test_close_returns_while_the_source_is_blocked(annotator):
    source = BlockingSource(2)
    stream = fastcell.stream(source, annotator, drop=False, stall_timeout=None)
    assert [next(stream).frame_index, next(stream).frame_index] == [0, 1]
    stream.close()
    assert _threads_stop(stream)


def test_stalled_source_ends_the_stream_after_the_timeout(annotator):
    with fastcell.stream(BlockingSource(3), annotator, drop=False, stall_timeout=0.3) as stream:
        got = [r.frame_index for r in stream]
    assert got == [0, 1, 2] and stream.stalled
    assert _threads_stop(stream)


def test_stalled_source_can_raise_instead(annotator):
    stream = fastcell.stream(BlockingSource(1), annotator, drop=False, stall_timeout=0.3, on_stall="raise")
    assert next(stream).frame_index == 0
    with pytest.raises(StreamStalled, match="frozen-camera delivered no frame"):
        next(stream)
    assert _threads_stop(stream)


def test_an_error_in_the_source_reaches_the_consumer_with_its_cause(annotator):
    def frames():
        yield from _frames(3)
        raise RuntimeError("camera exploded")

    got = []
    with pytest.raises(StreamError, match="capture stage") as info:
        with fastcell.stream(frames(), annotator) as stream:
            for r in stream:
                got.append(r.frame_index)
    assert isinstance(info.value.__cause__, RuntimeError) and "camera exploded" in str(info.value.__cause__)
    assert got == [0, 1, 2]  # what came before the failure is delivered
    assert _threads_stop(stream)


def test_a_bad_frame_in_an_iterable_is_a_value_error(annotator):
    frames = _frames(2) + [np.zeros((8, 8), np.float64)]
    with pytest.raises(StreamError) as info:
        list(fastcell.stream(frames, annotator))
    assert isinstance(info.value.__cause__, ValueError) and "frame 2" in str(info.value.__cause__)


@pytest.mark.parametrize("stage", ["infer", "postprocess"])
def test_an_error_in_inference_or_postprocessing_reaches_the_consumer(annotator, stage):
    class Broken(Annotator):
        pass

    broken = Broken(annotator.backend, annotator.spec)

    def fail(*args, **kwargs):
        raise MemoryError(f"{stage} ran out")

    setattr(broken, stage, fail)
    stream = fastcell.stream(_frames(4), broken)
    with pytest.raises(StreamError) as info:
        list(stream)
    assert isinstance(info.value.__cause__, MemoryError)
    assert _threads_stop(stream)


# -- file sources ----------------------------------------------------------------------------------
def test_video_file_written_with_opencv(annotator, tmp_path):
    path = tmp_path / "cells.avi"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 30.0, (64, 48))
    if not writer.isOpened():
        pytest.skip("this OpenCV build cannot write MJPG video")
    for f in _frames(10):
        writer.write(cv2.resize(f, (64, 48)))
    writer.release()
    source = open_source(str(path))
    assert not source.live and len(source) == 10
    with fastcell.stream(source, annotator) as stream:
        results = list(stream)
    assert [r.frame_index for r in results] == list(range(10))
    assert all(r.image.shape == (48, 64, 3) and r.source == str(path) for r in results)


def test_folder_with_corrupt_empty_gray_rgba_and_16bit_images(annotator, tmp_path, bccd_images):
    frame = cv2.resize(cv2.imread(str(bccd_images[0])), (160, 120))
    cv2.imwrite(str(tmp_path / "a_bgr.png"), frame)
    cv2.imwrite(str(tmp_path / "b_gray.png"), cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY))
    cv2.imwrite(str(tmp_path / "c_rgba.png"), cv2.cvtColor(frame, cv2.COLOR_BGR2BGRA))
    cv2.imwrite(str(tmp_path / "d_16bit.png"), frame.astype(np.uint16) * 257)
    (tmp_path / "e_corrupt.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg" * 10)
    (tmp_path / "f_empty.png").write_bytes(b"")
    (tmp_path / "notes.txt").write_text("not an image: ignored")
    with fastcell.stream(tmp_path, annotator) as stream:
        results = list(stream)
    names = [r.source.rsplit("/", 1)[-1] for r in results]
    assert names == ["a_bgr.png", "b_gray.png", "c_rgba.png", "d_16bit.png"]
    assert [r.frame_index for r in results] == [0, 1, 2, 3]
    assert sorted(p.rsplit("/", 1)[-1] for p, _ in stream.failed) == ["e_corrupt.jpg", "f_empty.png"]
    assert results[1].image.ndim == 2 and results[2].image.shape[2] == 4 and results[3].image.dtype == np.uint16
    for r in results:
        assert r.labels.shape == (120, 160) and r.segmented.shape == (120, 160, 3)
    np.testing.assert_allclose(results[3].boxes, results[0].boxes, atol=1e-3)  # 16-bit = same picture
    np.testing.assert_allclose(results[2].boxes, results[0].boxes, atol=1e-3)  # alpha ignored


def test_glob_and_list_of_paths(annotator, bccd_images):
    paths = [str(p) for p in bccd_images[:3]]
    by_list = [r.source for r in fastcell.stream(paths, annotator)]
    assert by_list == paths
    pattern = str(bccd_images[0].parent / (bccd_images[0].stem[:-1] + "?.jpg"))
    by_glob = [r.source for r in fastcell.stream(pattern, annotator)]
    assert str(bccd_images[0]) in by_glob and by_glob == sorted(by_glob)


def test_sources_that_name_nothing_are_clear_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="no such file"):
        open_source(str(tmp_path / "missing.png"))
    with pytest.raises(FileNotFoundError, match="no image files"):
        open_source(tmp_path)
    with pytest.raises(FileNotFoundError, match="matches no image files"):
        open_source(str(tmp_path / "*.png"))
    with pytest.raises(TypeError, match="cannot read frames from a float"):
        open_source(1.5)
    with pytest.raises(OSError, match="cannot open camera:97"):
        open_source(97)  # no such camera


def test_stream_cli_prints_statistics(random_model_dir, bccd_images, capsys):
    from fastcell.cli import main

    code = main(["stream", str(bccd_images[0].parent / "BloodImage_0000?.jpg"), "--model",
                 str(random_model_dir / "model.json"), "--device", "onnxruntime", "--show"])
    out, err = capsys.readouterr()
    assert code == 0
    assert "done:" in out and "fps" in out and "dropped 0" in out
    assert "no display" in err


# -- unsupported images are skipped when read ---------------------------------------------------------
def test_float32_and_int16_images_are_skipped_when_read_and_the_stream_goes_on(annotator, tmp_path, bccd_images):
    frame = cv2.resize(cv2.imread(str(bccd_images[0])), (160, 120))
    cv2.imwrite(str(tmp_path / "a_good.png"), frame)
    assert cv2.imwrite(str(tmp_path / "b_float.tiff"), frame.astype(np.float32) / 255)
    assert cv2.imwrite(str(tmp_path / "c_signed.tiff"), frame[:, :, 0].astype(np.int16) - 128)
    cv2.imwrite(str(tmp_path / "d_good.png"), frame[::-1])
    with fastcell.stream(tmp_path, annotator) as stream:
        results = list(stream)
    assert [r.source.rsplit("/", 1)[-1] for r in results] == ["a_good.png", "d_good.png"]
    assert [r.frame_index for r in results] == [0, 3]  # a file's index is its place in the folder
    reasons = {p.rsplit("/", 1)[-1]: why for p, why in stream.failed}
    assert sorted(reasons) == ["b_float.tiff", "c_signed.tiff"]
    assert "unsupported image" in reasons["b_float.tiff"] and "dtype float32" in reasons["b_float.tiff"]
    assert "dtype int16" in reasons["c_signed.tiff"]


# -- cv2.VideoCapture: used and released by the reading thread only ------------------------------------
class FakeCapture:
    """Stands in for cv2.VideoCapture: ``frames`` quick reads, then reads that hang until ``unblock``."""

    instances: list["FakeCapture"] = []

    def __init__(self, target, api=None, params=None, *, frames: int = 2, accepts_params: bool = True) -> None:
        self.params = list(params or [])
        self.opened = accepts_params or not self.params
        self.frames = frames
        self.unblock = threading.Event()
        self.read_threads: set[int] = set()
        self.released_by: int | None = None
        self.released = threading.Event()
        FakeCapture.instances.append(self)

    def isOpened(self) -> bool:
        return self.opened

    def get(self, prop) -> float:
        return 0.0

    def read(self):
        self.read_threads.add(threading.get_ident())
        if self.frames > 0:
            self.frames -= 1
            return True, np.full((48, 64, 3), 128, np.uint8)
        self.unblock.wait()  # a frozen camera: the read returns only when the device gives up
        return False, None

    def release(self) -> None:
        self.released_by = threading.get_ident()
        self.released.set()


@pytest.fixture()
def fake_capture(monkeypatch):
    FakeCapture.instances = []
    monkeypatch.setattr(cv2, "VideoCapture", FakeCapture)
    yield FakeCapture
    for cap in FakeCapture.instances:
        cap.unblock.set()


def test_video_capture_opens_with_timeouts_and_without_them_where_refused(fake_capture, monkeypatch):
    from fastcell.io.sources import VideoCapture

    source = VideoCapture(0, open_timeout=2.5, read_timeout=0.75)
    params = fake_capture.instances[0].params
    assert params == [cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, 2500, cv2.CAP_PROP_READ_TIMEOUT_MSEC, 750]
    source.close()  # nobody is reading: released at once, here
    assert fake_capture.instances[0].released_by == threading.get_ident()
    monkeypatch.setattr(cv2, "VideoCapture", lambda *a: FakeCapture(*a, accepts_params=False))
    source = VideoCapture(0)  # a camera backend (V4L2) that refuses the timeouts
    assert source.live and fake_capture.instances[-1].params == [] and fake_capture.instances[-1].opened
    source.close()
    # A URL without FFmpeg may go to a backend that refuses them too (GStreamer): retried as well
    monkeypatch.setattr(cv2.videoio_registry, "hasBackend", lambda api: api != cv2.CAP_FFMPEG)
    source = VideoCapture("rtsp://camera.invalid/stream")
    assert source.live and fake_capture.instances[-1].params == [] and fake_capture.instances[-1].opened
    source.close()


def test_an_unreachable_url_is_not_retried_without_its_timeouts(monkeypatch, tmp_path):
    """FFmpeg takes both timeouts: a failed open there is the stream's, and a retry without them
    would wait for OpenCV's own 30 s open timeout."""
    from fastcell.io.sources import VideoCapture

    attempts = []

    class Unreachable(FakeCapture):
        def __init__(self, target, api=None, params=None) -> None:
            super().__init__(target, api, params)
            self.opened = False
            attempts.append(self.params)

    monkeypatch.setattr(cv2, "VideoCapture", Unreachable)
    monkeypatch.setattr(cv2.videoio_registry, "hasBackend", lambda api: True)
    with pytest.raises(OSError, match="cannot open rtsp://camera.invalid/stream"):
        VideoCapture("rtsp://camera.invalid/stream", open_timeout=1.5)
    assert attempts == [[cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, 1500, cv2.CAP_PROP_READ_TIMEOUT_MSEC, 5000]]
    attempts.clear()
    with pytest.raises(OSError, match="cannot open camera:3"):
        VideoCapture(3)  # a camera: the timeouts may be what its backend refused, so once more without
    assert len(attempts) == 2 and attempts[1] == []
    attempts.clear()
    with pytest.raises(OSError, match="cannot open"):
        VideoCapture(str(tmp_path / "clip.avi"))  # a local file: another backend may read it, at no cost
    assert len(attempts) == 2 and attempts[1] == []


class FlakyCapture(FakeCapture):
    """A network camera: ``frames[i]`` reads on its i-th opening, then reads that fail after the
    read timeout (FFmpeg's CAP_PROP_READ_TIMEOUT_MSEC); openings beyond the list fail."""

    frames_per_open: list[int] = []

    def __init__(self, target, api=None, params=None) -> None:
        opening = len([c for c in FakeCapture.instances if isinstance(c, FlakyCapture)])
        count = self.frames_per_open[opening] if opening < len(self.frames_per_open) else 0
        super().__init__(target, api, params, frames=count)
        self.opened = opening < len(self.frames_per_open)
        given = dict(zip(self.params[::2], self.params[1::2]))
        self.read_timeout = given.get(cv2.CAP_PROP_READ_TIMEOUT_MSEC, 0) / 1000

    def read(self):
        if self.frames > 0:
            self.frames -= 1
            return True, np.full((48, 64, 3), 128, np.uint8)
        time.sleep(self.read_timeout)  # the frozen stream: the read gives up after its timeout
        return False, None


def test_a_reconnect_is_not_taken_for_a_stall(annotator, fake_capture, monkeypatch):
    """One next() spans a timed-out read, the pause and the reopen — longer than the stall limit;
    each step is shorter, and each restarts the stall timer (the source's heartbeat)."""
    from fastcell.io.sources import VideoCapture

    monkeypatch.setattr(cv2, "VideoCapture", FlakyCapture)
    FlakyCapture.frames_per_open = [2, 3]  # 2 frames, a disconnect, 3 frames, a disconnect for good
    source = VideoCapture("rtsp://camera.invalid/stream", reconnect=2, reconnect_delay=0.8, read_timeout=0.8)
    with fastcell.stream(source, annotator, drop=False, stall_timeout=1.2, on_stall="raise") as stream:
        got = [r.frame_index for r in stream]  # failed read 0.8 s + pause 0.8 s > 1.2 s per frame
    assert got == [0, 1, 2, 3, 4] and not stream.stalled
    assert source.reconnects == 3  # one after the first disconnect, two failed ones after the second


def test_default_camera_timeouts_fit_inside_the_auto_stall_limit(annotator, fake_capture, monkeypatch):
    """With the defaults, a read that times out ends before the stall limit, so reconnect works."""
    import fastcell.pipeline as pipeline
    from fastcell.io.sources import VideoCapture

    source = VideoCapture("rtsp://camera.invalid/stream", reconnect=3)
    with fastcell.stream(source, annotator) as stream:
        limit = stream.stall_timeout
    assert limit == pipeline.STALL_TIMEOUT
    assert max(source.read_timeout, source.open_timeout, source.reconnect_delay) < limit
    # raised timeouts raise "auto" with them
    source = VideoCapture("rtsp://camera.invalid/stream", reconnect=3, read_timeout=30)
    with fastcell.stream(source, annotator) as stream:
        assert stream.stall_timeout > 30


def test_close_does_not_release_the_capture_under_a_running_read(annotator, fake_capture):
    from fastcell.io.sources import VideoCapture

    source = VideoCapture(0)
    cap = fake_capture.instances[0]
    stream = fastcell.stream(source, annotator, drop=False)
    assert [next(stream).frame_index, next(stream).frame_index] == [0, 1]
    time.sleep(0.2)  # the capture thread is now inside the hanging read
    start = time.monotonic()
    stream.close()
    assert time.monotonic() - start < 1.5  # close does not wait for the read
    assert not cap.released.is_set()  # releasing under a running read() is what crashes OpenCV
    cap.unblock.set()  # the device gives up; the reading thread releases it
    assert cap.released.wait(WAIT)
    assert cap.read_threads == {cap.released_by} and cap.released_by != threading.get_ident()
    assert _threads_stop(stream)


class HungSource(Source):
    """Yields one frame, then hangs in a read that ``close()`` cannot interrupt (a wedged driver)."""

    live = True

    def __init__(self) -> None:
        super().__init__()
        self.name = "wedged"
        self.release = threading.Event()
        self.closed = False

    def __iter__(self):
        yield _frames(1)[0], self.name, 0, time.monotonic()
        self.release.wait()

    def close(self) -> None:
        self.closed = True  # a flag only: the read goes on


def test_close_returns_promptly_while_a_read_cannot_be_interrupted(annotator):
    source = HungSource()
    stream = fastcell.stream(source, annotator, stall_timeout=None)
    assert next(stream).frame_index == 0
    time.sleep(0.2)
    start = time.monotonic()
    stream.close()
    assert time.monotonic() - start < 1.5 and source.closed
    assert not stream._threads[1].is_alive() and not stream._threads[2].is_alive()  # inference, post done
    source.release.set()
    assert _threads_stop(stream)


# -- stall_timeout -------------------------------------------------------------------------------------
def _slow(n: int, pause: float):
    for frame in _frames(n):
        time.sleep(pause)
        yield frame


def test_stall_timeout_auto_limits_live_sources_only(annotator, monkeypatch, tmp_path):
    import fastcell.io.sources as sources
    import fastcell.pipeline as pipeline

    cv2.imwrite(str(tmp_path / "a.png"), _frames(1)[0])
    it = iter(_frames(2))
    cases = {"folder": (tmp_path, None), "iterable": (_frames(2), None), "generator": (_slow(1, 0), None),
             "callable": (lambda: next(it, None), pipeline.STALL_TIMEOUT), "pushed": (Pushed(), None)}
    for name, (source, expected) in cases.items():
        with fastcell.stream(source, annotator) as stream:
            assert stream.stall_timeout == expected, name
    with fastcell.stream(Pushed(), annotator, stall_timeout=3) as stream:
        assert stream.stall_timeout == 3.0  # an explicit limit applies to any source

    monkeypatch.setattr(sources._base, "STALL_TIMEOUT", 0.15)  # what "auto" gives live sources
    with fastcell.stream(_slow(3, 0.5), annotator) as stream:  # a slow producer is waited for
        assert [r.frame_index for r in stream] == [0, 1, 2] and not stream.stalled
    slow = _slow(3, 0.5)
    with fastcell.stream(lambda: next(slow, None), annotator) as stream:  # a live one is not
        assert list(stream) == [] and stream.stalled


def test_pushed_source_waits_through_pauses_and_an_explicit_limit_ends_it(annotator, monkeypatch):
    import fastcell.io.sources as sources

    monkeypatch.setattr(sources._base, "STALL_TIMEOUT", 0.15)
    source = Pushed()
    frames = _frames(3)

    def acquire():
        for f in frames:
            time.sleep(0.5)  # acquisition pauses longer than any live limit
            source.push(f)
        source.end()

    threading.Thread(target=acquire).start()
    with fastcell.stream(source, annotator, drop=False) as stream:
        assert [r.frame_index for r in stream] == [0, 1, 2] and not stream.stalled
    with pytest.raises(StreamStalled, match="pushed delivered no frame for 0.2"):
        list(fastcell.stream(Pushed(), annotator, stall_timeout=0.2, on_stall="raise"))


@pytest.mark.parametrize("kwargs, message", [
    ({"stall_timeout": 0}, "stall_timeout must be"), ({"stall_timeout": -1.0}, "stall_timeout must be"),
    ({"stall_timeout": "soon"}, "got 'soon'"), ({"stall_timeout": True}, "got True"),
    ({"on_stall": "ignore"}, "on_stall must be 'end' or 'raise', got 'ignore'"),
])
def test_bad_stall_settings_are_refused_before_the_source_is_opened(annotator, tmp_path, kwargs, message):
    with pytest.raises(ValueError, match=message):  # not FileNotFoundError: nothing was opened
        fastcell.stream(tmp_path / "missing", annotator, **kwargs)


# -- a caller's Annotator --------------------------------------------------------------------------------
def test_a_caller_can_use_its_annotator_while_a_stream_runs_on_it(annotator, bccd_images):
    frames = [cv2.imread(str(p)) for p in bccd_images[:4]] * 3
    others = [cv2.resize(cv2.imread(str(p)), (320, 240)) for p in bccd_images[4:6]]
    expected = annotator.batch(frames)
    expected_others = [annotator(f) for f in others]
    got = []
    with fastcell.stream(frames, annotator, batch_size=4) as stream:
        assert stream.annotator is not annotator and stream.annotator.backend is annotator.backend
        consumer = threading.Thread(target=lambda: got.extend(stream))
        consumer.start()
        direct = []
        while consumer.is_alive() or not direct:  # direct calls overlap the stream's batches
            i = len(direct) % 2
            direct.append((i, annotator(others[i])))
        consumer.join(WAIT)
    assert len(got) == len(frames)
    for r, e in zip(got, expected):
        np.testing.assert_allclose(r.boxes, e.boxes, atol=1e-4)
        np.testing.assert_array_equal(r.class_ids, e.class_ids)
    for i, r in direct:
        np.testing.assert_allclose(r.boxes, expected_others[i].boxes, atol=1e-4)


def test_stream_settings_do_not_change_the_callers_annotator(annotator):
    lean = annotator.with_options(segment=False, keep_image=False)
    (r,) = list(fastcell.stream(_frames(1), lean))  # the stream keeps the given Annotator's settings
    assert r.labels is None and r.image is None
    with fastcell.stream(_frames(1), lean, segment=True, score_threshold=0.3) as stream:
        (r,) = list(stream)
    assert r.labels is not None and r.image is None
    assert stream.annotator.spec.thresholds.score == 0.3 and stream.annotator.segment
    assert not lean.segment and lean.spec.thresholds.score == annotator.spec.thresholds.score == 0.25


# -- Pushed copies -----------------------------------------------------------------------------------------
def test_pushed_frames_are_copied_so_the_acquisition_buffer_can_be_reused(annotator, bccd_images):
    first, second = (cv2.resize(cv2.imread(str(p)), (200, 150)) for p in bccd_images[:2])
    buffer = first.copy()  # the SDK's one buffer
    source = Pushed(maxsize=4)
    source.push(buffer)
    buffer[...] = second
    source.push(buffer)
    buffer[...] = 0  # refilled before the stream has read anything
    source.end()
    results = list(fastcell.stream(source, annotator, drop=False))
    assert [r.frame_index for r in results] == [0, 1]
    np.testing.assert_array_equal(results[0].image, first)
    np.testing.assert_array_equal(results[1].image, second)
    np.testing.assert_allclose(results[0].boxes, annotator(first).boxes, atol=1e-4)
    np.testing.assert_allclose(results[1].boxes, annotator(second).boxes, atol=1e-4)

    shared = Pushed(copy=False)  # opting out: the queued frame is the caller's array
    shared.push(buffer)
    shared.end()
    (r,) = list(fastcell.stream(shared, annotator, drop=False))
    assert r.image is buffer


def test_push_after_the_stream_closed_is_discarded_not_an_error(annotator):
    source = Pushed()
    stream = fastcell.stream(source, annotator)
    source.push(_frames(1)[0])
    assert next(stream).frame_index == 0
    stream.close()
    source.push(_frames(1)[0])  # the camera's callback may fire once more: it must not raise
    assert source.discarded == 1
    ended = Pushed()
    ended.end()
    with pytest.raises(RuntimeError, match="after end"):
        ended.push(_frames(1)[0])


# -- arrays: a stack of frames or one frame, by shape ---------------------------------------------------------
def test_array_sources_split_by_shape(annotator):
    from fastcell.io.sources import Frames, array_frames

    color = _frames(3, seed=4)
    color = [cv2.resize(f, (64, 48)) for f in color]
    gray = [cv2.cvtColor(f, cv2.COLOR_BGR2GRAY) for f in color]
    gray_stack = np.stack(gray)  # (3, 48, 64): three gray frames
    results = list(fastcell.stream(gray_stack, annotator))
    assert [r.frame_index for r in results] == [0, 1, 2]
    for r, g in zip(results, gray):
        assert r.image.shape == (48, 64) and r.labels.shape == (48, 64)
        np.testing.assert_allclose(r.boxes, annotator(g).boxes, atol=1e-4)
    for array, n in [(np.stack(color), 3), (gray_stack[..., None], 3), (color[0], 1), (gray[0], 1),
                     (gray[0][:, :, None], 1)]:
        assert len(array_frames(array)) == n, array.shape
        assert len(list(fastcell.stream(array, annotator))) == n, array.shape
    assert len(Frames(gray_stack)) == 3  # the same rule for a Frames source built directly
    narrow = np.zeros((5, 40, 3), np.uint8)  # 5 gray frames 3 px wide? No: one 5×40 BGR image
    assert [f.shape for f in array_frames(narrow)] == [(5, 40, 3)]
    assert len(list(fastcell.stream(list(narrow), annotator))) == 5  # a list says "frames"
    with pytest.raises(ValueError, match=r"got shape \(2, 3, 48, 64, 3\)"):
        fastcell.stream(np.zeros((2, 3, 48, 64, 3), np.uint8), annotator)


# -- the embedding example ---------------------------------------------------------------------------------
def test_acquisition_callback_example_runs(random_model_dir, capsys):
    from fastcell.examples.acquisition_callback import main

    main(str(random_model_dir / "model.json"))
    out = capsys.readouterr().out.splitlines()
    analysed, dropped = (int(w) for w in re.match(r"(\d+) frames analysed, (\d+) dropped", out[-1]).groups())
    assert analysed > 0 and analysed + dropped == 60  # every frame the camera made is accounted for
    assert sum(line.startswith("frame ") for line in out) == analysed


# -- the stream CLI: one-line errors, everything closed ---------------------------------------------------------
@pytest.mark.parametrize("argv, code, message", [
    (["stream", "/no/such/folder"], 1, "cannot read '/no/such/folder': no such file"),
    (["stream", "{bad_video}"], 1, "cannot open {bad_video} with OpenCV"),
    (["stream", "{folder}", "--model", "{folder}/no-model.json"], 1, "cannot open model"),
    (["stream", "{folder}", "--stall-timeout", "soon"], 2, "argument --stall-timeout: invalid float value"),
    (["stream", "{folder}", "--stall-timeout", "-1"], 2, "--stall-timeout must be >= 0"),
    (["stream", "{folder}", "--batch-size", "0"], 2,
     "argument --batch-size: expected a positive integer (1 or more), got 0"),
    (["stream", "{folder}", "--batch-size", "two"], 2, "argument --batch-size: expected a positive integer, got 'two'"),
])
def test_stream_cli_bad_input_is_one_line_and_a_nonzero_exit(tmp_path, capsys, argv, code, message):
    from fastcell.cli import main

    (tmp_path / "clip.avi").write_bytes(b"not a video" * 100)
    cv2.imwrite(str(tmp_path / "a.png"), _frames(1)[0])
    paths = {"bad_video": tmp_path / "clip.avi", "folder": tmp_path}
    argv = [a.format(**paths) for a in argv]
    try:
        got = main(argv)
    except SystemExit as exit_info:  # argparse's own refusals
        got = exit_info.code
    assert got == code
    err = capsys.readouterr().err.strip()
    assert message.format(**paths) in err and len(err.splitlines()) == 1 and "Traceback" not in err


def test_stream_cli_closes_the_source_when_the_model_or_the_stream_fails(random_model_dir, monkeypatch, capsys):
    import fastcell.io.sources as sources
    from fastcell.cli import main

    opened = []

    def bad_frames(source, **kwargs):
        opened.append(sources.Frames(_frames(2) + [np.zeros((8, 8), np.float64)], "bad"))
        return opened[-1]

    monkeypatch.setattr(sources, "open_source", bad_frames)
    assert main(["stream", "x", "--model", "/no/model.json"]) == 1
    assert opened[-1]._closed
    assert main(["stream", "x", "--model", str(random_model_dir / "model.json"), "--device", "onnxruntime"]) == 1
    out, err = capsys.readouterr()
    assert opened[-1]._closed and "done: 2 frames" in out
    assert err.strip().splitlines()[-1].startswith("fastcell stream: stopped: the capture stage of the stream failed")


# -- statistics ------------------------------------------------------------------------------------------
def test_fps_of_results_that_arrive_in_one_burst_counts_from_the_start(annotator):
    """Four frames read over >= 0.6 s reach the consumer as one batch, microseconds apart: the
    rate is at most 4 / 0.6 s, not four over those microseconds."""
    with fastcell.stream(_slow(4, 0.15), annotator, batch_size=4, max_latency=30.0) as stream:
        got = [r.frame_index for r in stream]
    assert got == [0, 1, 2, 3]
    assert 0 < stream.fps <= 4 / 0.6


def test_fps_over_a_full_window_spans_from_the_delivery_before_it(annotator):
    with fastcell.stream(_frames(1), annotator) as stream:
        list(stream)
    # 300 results in bursts of 10, one burst every 0.5 s: 20 results/s whatever the burst edges
    stream._delivered.clear()
    stream._delivered.extend(100.0 + 0.5 * (i // 10) + 1e-6 * (i % 10) for i in range(300))
    window = list(stream._delivered)
    assert len(window) == 257  # the last 256 results and the delivery before them
    assert stream.fps == pytest.approx(256 / (window[-1] - window[0]))
    assert stream.fps == pytest.approx(20.0, rel=0.05)


# -- the stream's batch size ---------------------------------------------------------------------------------
class CountingBackend:
    """The real backend, recording the batch size of every call."""

    def __init__(self, backend) -> None:
        self.backend = backend
        self.name, self.precision, self.spec = backend.name, backend.precision, backend.spec
        self.sizes: list[int] = []
        self.closed = False

    def infer(self, batch):
        self.sizes.append(batch.shape[0])
        return self.backend.infer(batch)

    def close(self) -> None:
        self.closed = True


def test_batch_size_reaches_the_backend_with_a_callers_annotator(annotator):
    counting = CountingBackend(annotator.backend)
    caller = Annotator(counting, annotator.spec, max_batch=8)
    frames = _frames(16)
    with fastcell.stream(frames, caller, batch_size=16, max_latency=30.0) as stream:
        results = list(stream)
    assert [r.frame_index for r in results] == list(range(16))
    assert counting.sizes == [16]  # one call, not two of the caller's max_batch
    assert caller.max_batch == 8  # the caller's Annotator is left as it was


# -- the stream's Annotator when inference ends ------------------------------------------------------------
def test_the_stream_frees_its_siblings_buffers_and_leaves_the_shared_backend_open(annotator):
    counting = CountingBackend(annotator.backend)
    caller = Annotator(counting, annotator.spec)
    frame = _frames(1)[0]
    with fastcell.stream(_frames(3), caller) as stream:
        assert len(list(stream)) == 3
    assert _threads_stop(stream)
    assert stream.annotator._pre._buffer.nbytes == 0  # the sibling's batch buffer is given back
    assert caller._pre._buffer.nbytes > 0 and not counting.closed  # the caller's are untouched
    np.testing.assert_allclose(caller(frame).boxes, annotator(frame).boxes, atol=1e-4)
    (again,) = stream.annotator.batch([frame])  # a released sibling still works: it reallocates
    np.testing.assert_allclose(again.boxes, annotator(frame).boxes, atol=1e-4)


def test_an_annotator_the_stream_opened_is_closed_when_a_running_inference_returns(random_model_dir, monkeypatch):
    release, entered = threading.Event(), threading.Event()
    closed = []
    real_infer = Annotator.infer

    def slow_infer(self, batch):
        entered.set()
        release.wait(WAIT)  # a long GPU call, still running when the stream is closed
        return real_infer(self, batch)

    monkeypatch.setattr(Annotator, "infer", slow_infer)
    monkeypatch.setattr(Annotator, "close", lambda self: closed.append(self))
    stream = fastcell.stream(_frames(2), random_model_dir / "model.json", device="onnxruntime")
    assert entered.wait(WAIT)
    stream.close(timeout=0.1)  # returns without waiting for the inference
    assert closed == []  # its backend is in use: not closed under the running call
    release.set()
    assert _threads_stop(stream)
    assert closed == [stream.annotator]


# -- Pushed: the last frame is never lost ------------------------------------------------------------------
def test_pushed_frames_pushed_and_ended_before_reading_are_all_read():
    source = Pushed(maxsize=4)
    frames = _frames(3)
    for f in frames:
        source.push(f)
    source.end()
    assert [index for _, _, index, _ in source] == [0, 1, 2]


def test_a_push_and_end_while_the_reader_times_out_does_not_lose_the_frame():
    """The reader's wait runs out; before it looks at ``_ended``, the acquisition thread pushes
    its last frame and ends the source. That frame must still be read."""
    import queue as queue_module

    source = Pushed()
    frame = _frames(1)[0]

    class RacingQueue(queue_module.Queue):
        raced = False

        def get(self, block=True, timeout=None):
            if block and not RacingQueue.raced:  # the wait for a frame, which now times out...
                RacingQueue.raced = True
                source.push(frame)  # ...while the last frame is pushed and the source ended
                source.end()
                raise queue_module.Empty
            return super().get(block, timeout)

    source._queue = RacingQueue(maxsize=8)
    items = list(source)
    assert [index for _, _, index, _ in items] == [0]
    np.testing.assert_array_equal(items[0][0], frame)


# -- ImageFiles: early close, hung reads ----------------------------------------------------------------------
def test_image_files_closed_early_neither_wait_for_queued_decodes_nor_keep_the_process_alive(tmp_path, monkeypatch):
    from fastcell.io.sources import ImageFiles

    paths = []
    for i in range(4):
        paths.append(str(tmp_path / f"{i}.png"))
        cv2.imwrite(paths[-1], _frames(1, seed=i)[0])
    hang = threading.Event()
    started = []
    real_read = ImageFiles._read

    def read(self, path):
        started.append(paths.index(path))
        if path != paths[0]:
            hang.wait(WAIT)  # a dead network drive
        return real_read(self, path)

    monkeypatch.setattr(ImageFiles, "_read", read)
    files = iter(ImageFiles(paths, workers=1))
    try:
        _, path, index, _ = next(files)
        assert (path, index) == (paths[0], 0)
        deadline = time.monotonic() + WAIT
        while started != [0, 1] and time.monotonic() < deadline:  # file 1 is being read (and hangs)
            time.sleep(0.01)
        decoders = [t for t in threading.enumerate() if t.name.startswith("fastcell-decode")]
        assert decoders and all(t.daemon for t in decoders)  # a hung read never blocks exit
        start = time.monotonic()
        files.close()
        assert time.monotonic() - start < 1.0  # neither the hung read nor the queued file 2 waited for
    finally:
        hang.set()
    for t in decoders:
        t.join(WAIT)
    assert not any(t.is_alive() for t in decoders)
    assert started == [0, 1]  # file 2, queued behind the hung read, was cancelled, never read


# -- Frames: close stops what it consumes, and nothing else ---------------------------------------------
def test_frames_close_stops_a_generator_but_not_a_users_object_with_close():
    from fastcell.io.sources import Frames

    class Recording:
        """The caller's frame provider, with a close() of its own (a file, a camera wrapper)."""

        def __init__(self) -> None:
            self.frames = _frames(3)
            self.closed = False

        def __iter__(self):
            return iter(self.frames)

        def close(self) -> None:
            self.closed = True

    provider = Recording()
    source = Frames(provider)
    assert [index for _, _, index, _ in source] == [0, 1, 2]
    source.close()
    assert not provider.closed

    def generate():
        yield from _frames(3)

    generator = generate()
    source = Frames(generator)
    next(iter(source))
    source.close()
    assert list(generator) == []  # stopped


def test_a_stream_over_a_users_object_does_not_close_it(annotator):
    class Provider:
        def __init__(self) -> None:
            self.closed = False

        def __iter__(self):
            return iter(_frames(2))

        def close(self) -> None:
            self.closed = True

    provider = Provider()
    assert len(list(fastcell.stream(provider, annotator))) == 2
    assert not provider.closed
