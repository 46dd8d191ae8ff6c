"""Frame sources: files and folders, videos and cameras (cv2.VideoCapture), pushed frames, arrays,
iterables — each on its own and inside a stream. The pipeline itself: test_pipeline.py."""

from __future__ import annotations

import os
import shutil
import threading
import time

import cv2
import numpy as np
import pytest
from _streams import WAIT
from _streams import frames as _frames
from _streams import threads_stop as _threads_stop

import fastcell
from fastcell.annotator import Annotator
from fastcell.io.sources import Pushed, open_source
from fastcell.runtime import open_backend
from fastcell.spec import ModelSpec


@pytest.fixture(scope="module")
def annotator(random_model_dir) -> Annotator:
    return Annotator(open_backend(ModelSpec.load(random_model_dir), "onnxruntime"))


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


# -- read_image: the header is checked before anything is read ----------------------------------------------
def _png_header(width: int, height: int) -> bytes:
    """The first bytes of a PNG of that size (signature and IHDR), as a huge image would start."""
    import struct
    import zlib

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + struct.pack(">I", 13) + b"IHDR" + ihdr + struct.pack(">I", zlib.crc32(b"IHDR" + ihdr))


def test_frames_over_max_pixels_are_refused_from_the_header_without_reading_the_file(tmp_path, monkeypatch):
    from fastcell.io.sources import MAX_PIXELS, read_image

    big = tmp_path / "big.png"  # a real 16000 x 16000 PNG compresses to under a megabyte
    big.write_bytes(_png_header(16000, 16000) + b"\0" * 1000)
    huge = tmp_path / "huge.png"  # 10 GB (sparse) behind the header of a small image
    with open(huge, "wb") as f:
        f.write(_png_header(64, 64))
        f.truncate(10 * 2**30)
    reads = []
    real_fromfile = np.fromfile
    monkeypatch.setattr(np, "fromfile", lambda *a, **k: reads.append(a) or real_fromfile(*a, **k))
    with pytest.raises(ValueError, match=r"16000x16000 = 256,000,000 pixels, over the limit of 100,000,000"):
        read_image(big)
    with pytest.raises(ValueError, match=r"file of 10,737,418,240 bytes"):
        read_image(huge)
    assert reads == [] and MAX_PIXELS == 100_000_000
    with pytest.raises(ValueError, match="over the limit of 1,000"):
        read_image(big, max_pixels=1000)
    image = np.zeros((30, 40, 3), np.uint8)
    cv2.imwrite(str(tmp_path / "ok.png"), image)
    assert read_image(tmp_path / "ok.png", max_pixels=1200).shape == (30, 40, 3)  # exactly at the limit
    with pytest.raises(ValueError, match="1,199"):
        read_image(tmp_path / "ok.png", max_pixels=1199)
    assert read_image(tmp_path / "ok.png", max_pixels=None).shape == (30, 40, 3)


@pytest.mark.parametrize("value, error", [(0, ValueError), (-5, ValueError), (1.5, TypeError), (True, TypeError),
                                          ("100", TypeError), (float("nan"), TypeError)])
def test_bad_max_pixels_and_workers_are_refused(tmp_path, value, error):
    from fastcell.io.sources import ImageFiles, read_image

    with pytest.raises(error, match="max_pixels"):
        read_image(tmp_path / "x.png", max_pixels=value)
    with pytest.raises(error, match="max_pixels"):
        ImageFiles([], max_pixels=value)
    with pytest.raises(error, match="workers"):
        ImageFiles([], workers=value)


def test_a_fifo_or_folder_named_like_an_image_is_that_files_failure_not_a_hang(tmp_path):
    from fastcell.io.sources import read_image

    os.mkfifo(tmp_path / "pipe.jpg")  # opening it to read would block until a writer came
    with pytest.raises(ValueError, match="a FIFO, not an image file"):
        read_image(tmp_path / "pipe.jpg")
    (tmp_path / "dir.png").mkdir()
    with pytest.raises(ValueError, match="a folder, not an image file"):
        read_image(tmp_path / "dir.png")


def test_a_frame_too_big_for_memory_is_that_files_failure(tmp_path, monkeypatch, bccd_images):
    import fastcell.io.sources._files as files
    from fastcell.io.sources import ImageFiles

    real = files.read_image

    def read_image(path, max_pixels):
        if path.endswith("b.jpg"):
            raise MemoryError  # what np.fromfile/imdecode raise for a frame this machine cannot hold
        return real(path, max_pixels)

    monkeypatch.setattr(files, "read_image", read_image)
    for name in ("a.jpg", "b.jpg", "c.jpg"):
        shutil.copy(bccd_images[0], tmp_path / name)
    source = ImageFiles(sorted(str(p) for p in tmp_path.iterdir()))
    assert [name for _, name, _, _ in source] == [str(tmp_path / "a.jpg"), str(tmp_path / "c.jpg")]
    assert source.failed == [(str(tmp_path / "b.jpg"), "out of memory while reading it")]


# -- scan: every entry of a folder is read or accounted for -----------------------------------------------
def test_scan_skips_hostile_entries_with_reasons_and_lists_each_file_once(tmp_path, bccd_images):
    from fastcell.io.sources import scan

    src = tmp_path / "src"
    (src / "sub").mkdir(parents=True)
    shutil.copy(bccd_images[0], src / "a.jpg")
    shutil.copy(bccd_images[1], src / "sub" / "b.png")
    (src / "x.jpg").mkdir()  # a folder named like an image
    (src / "x.jpg" / "inner.jpg").write_bytes(b"x")
    os.mkfifo(src / "fifo.png")
    os.symlink("nowhere.jpg", src / "dangling.jpg")
    os.symlink("loop.jpg", src / "loop.jpg")
    os.symlink("a.jpg", src / "link_to_a.jpg")  # a second name for a.jpg: read once
    os.symlink(".", src / "sub" / "up")  # a folder loop
    (src / "anim.gif").write_bytes(b"GIF89a")
    (src / "clip.mp4").write_bytes(b"")
    (src / "notes.txt").write_text("x")
    (src / "labels.xml").write_text("x")
    (src / "README").write_text("x")

    flat = scan(src)
    assert flat.files == [str(src / "a.jpg")]
    assert dict(flat.skipped) == {
        str(src / "anim.gif"): "unsupported image format (.gif)",
        str(src / "clip.mp4"): "a video (.mp4): annotate it on its own",
        str(src / "dangling.jpg"): "a dangling symlink (to nowhere.jpg)",
        str(src / "fifo.png"): "a FIFO, not an image file",
        str(src / "link_to_a.jpg"): f"the same file as {src / 'a.jpg'}",
        str(src / "loop.jpg"): "a symlink loop",
        str(src / "x.jpg"): "a folder, not an image file (named like one)",
    }
    assert flat.ignored == {"(none)": 1, ".txt": 1, ".xml": 1} and flat.folders == 1

    deep = scan(src, recursive=True)
    assert deep.files == [str(src / "a.jpg"), str(src / "sub" / "b.png"), str(src / "x.jpg" / "inner.jpg")]
    assert dict(deep.skipped)[str(src / "sub" / "up")].startswith(f"a folder already listed as {src}")
    assert str(src / "x.jpg") not in dict(deep.skipped)  # entered as the folder it is

    out = src / "sub"
    assert scan(src, recursive=True, exclude=[out]).files == [str(src / "a.jpg"), str(src / "x.jpg" / "inner.jpg")]


def test_open_source_reports_skipped_entries_as_failed(tmp_path, bccd_images):
    shutil.copy(bccd_images[0], tmp_path / "a.jpg")
    os.mkfifo(tmp_path / "b.jpg")
    source = open_source(str(tmp_path))
    assert source.paths == [str(tmp_path / "a.jpg")]
    assert source.failed == [(str(tmp_path / "b.jpg"), "a FIFO, not an image file")]
    (tmp_path / "a.jpg").unlink()
    with pytest.raises(FileNotFoundError, match="1 entries skipped, e.g. .*b.jpg: a FIFO"):
        open_source(str(tmp_path))


def test_file_names_that_are_not_utf8_are_read_and_escaped_in_text(tmp_path, bccd_images):
    from fastcell.io._names import name_from_text, text_name
    from fastcell.io.sources import scan

    raw = os.fsencode(tmp_path) + b"/cell_\xff\xfe.jpg"
    shutil.copy(bccd_images[0], raw)
    listing = scan(tmp_path)
    assert [os.fsencode(p) for p in listing.files] == [raw]
    frame, name, _, _ = next(iter(open_source(str(tmp_path))))
    assert frame.shape[2] == 3 and os.fsencode(name) == raw
    assert text_name(name).endswith("cell_\\xff\\xfe.jpg") and os.fsencode(name_from_text(text_name(name))) == raw


@pytest.mark.parametrize("kwargs", [{"reconnect": -1}, {"reconnect": 1.5}, {"read_timeout": float("nan")},
                                    {"open_timeout": float("inf")}, {"reconnect_delay": -1.0}])
def test_bad_camera_settings_are_refused_before_anything_is_opened(monkeypatch, kwargs):
    from fastcell.io.sources import VideoCapture

    opened = []
    monkeypatch.setattr(cv2, "VideoCapture", lambda *a: opened.append(a))
    with pytest.raises(ValueError, match=next(iter(kwargs))):
        VideoCapture(0, **kwargs)
    assert opened == []


@pytest.mark.parametrize("maxsize, error", [(0, ValueError), (-1, ValueError), (2.5, TypeError)])
def test_bad_pushed_queue_sizes_are_refused(maxsize, error):
    with pytest.raises(error, match="maxsize"):
        Pushed(maxsize=maxsize)
