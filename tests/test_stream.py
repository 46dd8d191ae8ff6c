"""fastcell.stream: order, drop policy, shutdown, error propagation, stalls, and every kind of source."""

from __future__ import annotations

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
