"""fastcell.stream: order, drop policy, shutdown, error propagation, stalls, statistics, a caller's
Annotator, abandoned streams. The sources themselves: test_io_sources.py."""

from __future__ import annotations

import re
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
from fastcell.io.sources import Pushed, Source
from fastcell.pipeline import StreamError, StreamStalled
from fastcell.runtime import open_backend
from fastcell.spec import ModelSpec


@pytest.fixture(scope="module")
def annotator(random_model_dir) -> Annotator:
    return Annotator(open_backend(ModelSpec.load(random_model_dir), "onnxruntime"))


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


def test_a_bad_frame_in_an_iterable_is_a_type_error(annotator):
    frames = _frames(2) + [np.zeros((8, 8), np.float64)]
    with pytest.raises(StreamError) as info:
        list(fastcell.stream(frames, annotator))
    assert isinstance(info.value.__cause__, TypeError) and "frame 2" in str(info.value.__cause__)


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


# -- close with a read that cannot be interrupted ------------------------------------------------
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


@pytest.mark.parametrize("kwargs, error, message", [
    ({"stall_timeout": 0}, ValueError, "stall_timeout must be"),
    ({"stall_timeout": -1.0}, ValueError, "stall_timeout must be"),
    ({"stall_timeout": "soon"}, TypeError, "got 'soon'"), ({"stall_timeout": True}, TypeError, "got True"),
    ({"on_stall": "ignore"}, ValueError, "on_stall must be 'end' or 'raise', got 'ignore'"),
])
def test_bad_stall_settings_are_refused_before_the_source_is_opened(annotator, tmp_path, kwargs, error, message):
    with pytest.raises(error, match=message):  # not FileNotFoundError: nothing was opened
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
    with fastcell.stream(_frames(1), lean, segment=True, score=0.3) as stream:
        (r,) = list(stream)
    assert r.labels is not None and r.image is None
    assert stream.annotator.spec.thresholds.score == 0.3 and stream.annotator.segment
    assert not lean.segment and lean.spec.thresholds.score == annotator.spec.thresholds.score == 0.25


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
    for i in range(300):
        stream._stats.record(0.0, now=100.0 + 0.5 * (i // 10) + 1e-6 * (i % 10))
    window = list(stream._stats.delivered)
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


# -- an abandoned stream cleans up ------------------------------------------------------------------------
def test_abandoned_streams_end_their_threads_and_free_their_frames(annotator):
    """``break`` out of the loop, then drop the stream without close(): its threads end and every
    frame it read is freed (weak references to the frames die), for each of many such streams."""
    import gc
    import weakref

    made: list[weakref.ref] = []

    def endless():
        rng = np.random.default_rng(0)
        while True:
            frame = rng.integers(0, 256, (256, 256, 3), dtype=np.uint8)
            made.append(weakref.ref(frame))
            yield frame

    before = {t.ident for t in threading.enumerate()}
    pipelines = []
    for _ in range(12):
        stream = fastcell.stream(endless(), annotator, batch_size=4)
        for result in stream:
            break
        pipelines.append(weakref.ref(stream._pipeline))
        del stream, result
    gc.collect()
    deadline = time.monotonic() + WAIT
    while time.monotonic() < deadline:
        gc.collect()
        extra = [t for t in threading.enumerate() if t.ident not in before]
        if not extra and all(p() is None for p in pipelines):
            break
        time.sleep(0.05)
    assert [t.name for t in threading.enumerate() if t.ident not in before] == []
    assert [p for p in pipelines if p() is not None] == []  # the pipelines themselves are gone
    assert len(made) >= 12 and [r for r in made if r() is not None] == []  # and every frame they read


def test_a_closed_stream_is_not_stopped_again_by_its_finalizer(annotator):
    stream = fastcell.stream(_frames(3), annotator)
    assert len(list(stream)) == 3
    stream.close()
    assert not stream._finalizer.alive and _threads_stop(stream)
