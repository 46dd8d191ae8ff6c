"""``fastcell annotate``: end to end on real BCCD images, resuming after kills, bad files, video.

The model is the session's randomly initialised AttentionNet (``random_model_dir``): its cells are
meaningless but deterministic, which is what byte-for-byte comparisons need.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from fastcell.cli import main
from fastcell.cli.annotate import resolve

pytestmark = pytest.mark.filterwarnings(  # pycocotools 2.0.x vs NumPy 2 (see test_writers.py)
    "ignore:__array__ implementation doesn't accept a copy keyword:DeprecationWarning"
)

READABLE = 9  # 6 BCCD JPEGs + gray + RGBA + 16-bit
BAD = ("corrupt.jpg", "empty.png")


def _stream_available() -> bool:
    try:
        from fastcell import stream  # noqa: F401
    except ImportError:
        return False
    return True


needs_stream = pytest.mark.skipif(not _stream_available(), reason="fastcell.stream (fastcell/pipeline.py) is not there yet")


@pytest.fixture(scope="module")
def model_json(random_model_dir) -> str:
    return str(random_model_dir / "model.json")


# The random model fills every frame with the maximum number of boxes; BCCD fields hold at most
# ~30 cells, so cap it there to keep runs (and their crops) at a realistic size.
CAP = ("--max-detections", "40")


@pytest.fixture()
def source_dir(tmp_path, bccd_images) -> Path:
    """Real BCCD images plus the awkward cases: corrupt, empty, gray, RGBA, 16-bit, a non-image."""
    src = tmp_path / "src"
    src.mkdir()
    for path in bccd_images:
        shutil.copy(path, src / path.name)
    image = cv2.imread(str(bccd_images[0]))
    cv2.imwrite(str(src / "gray.png"), cv2.cvtColor(image, cv2.COLOR_BGR2GRAY))
    cv2.imwrite(str(src / "rgba.png"), cv2.cvtColor(image, cv2.COLOR_BGR2BGRA))
    cv2.imwrite(str(src / "deep16.tif"), image.astype(np.uint16) * 257)
    (src / "empty.png").write_bytes(b"")
    (src / "corrupt.jpg").write_bytes(b"not a jpeg" + bccd_images[1].read_bytes()[:64])
    (src / "notes.txt").write_text("not an image: ignored")
    return src


def annotate(*args: str, env: dict | None = None, **popen) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "fastcell", "annotate", *args, *CAP]
    return subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, **(env or {})}, timeout=300, **popen)


# ``fastcell annotate`` in which reading any image after the first K hangs: exactly K images can
# finish, however the threads are scheduled. The test then SIGKILLs the process, as a user would.
_HANG_AFTER_K = """
import sys, threading
from fastcell.io.sources import ImageFiles
k, read = int(sys.argv[1]), ImageFiles._read
def hanging_read(self, path):
    if self.paths.index(path) >= k:
        threading.Event().wait()  # never returns
    return read(self, path)
ImageFiles._read = hanging_read
from fastcell.cli import main
raise SystemExit(main(sys.argv[2:]))
"""


def annotate_killed_after(k: int, source: Path, out: Path, *args: str) -> int:
    """Run ``fastcell annotate SOURCE --out OUT ARGS`` until ``k`` images are finished, then SIGKILL it.

    Returns the number of finished images (records) the kill left.
    """
    cmd = [sys.executable, "-c", _HANG_AFTER_K, str(k), "annotate", str(source), "--out", str(out), *args, *CAP]
    process = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    records = out / ".fastcell" / "records"
    deadline = time.monotonic() + 240
    try:
        while process.poll() is None and time.monotonic() < deadline:
            if records.is_dir() and len(list(records.glob("*.json"))) >= k:
                break
            time.sleep(0.01)
        if process.poll() is not None:
            pytest.fail(f"the run ended (status {process.returncode}) before {k} images were finished: "
                        f"{process.stderr.read()}")
        time.sleep(0.3)  # were a (k+1)-th image to finish, it would now
        process.send_signal(signal.SIGKILL)
        assert process.wait(60) == -signal.SIGKILL
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        process.stderr.close()
    return len(list(records.glob("*.json")))


def tree(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def assert_same_tree(a: Path, b: Path) -> None:
    ta, tb = tree(a), tree(b)
    assert sorted(ta) == sorted(tb)
    assert [name for name in ta if ta[name] != tb[name]] == []


# -- resolving the source (no model needed) --------------------------------------------------------
def test_resolve_folder_sorts_ignores_other_files_and_keeps_keys_unique(tmp_path):
    for name in ("b.png", "a.png", "a.tif", "c.JPG", "notes.txt"):
        (tmp_path / name).write_bytes(b"x")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "d.png").write_bytes(b"x")
    plan = resolve(str(tmp_path))
    assert [Path(p).name for p in plan.paths] == ["a.png", "a.tif", "b.png", "c.JPG"]
    assert [i.key for i in plan.items] == ["a.png", "a.tif", "b", "c"]
    assert plan.items[3].source_format == "jpg" and plan.items[2].source_format is None
    deep = resolve(str(tmp_path), recursive=True)
    assert "sub/d" in [i.key for i in deep.items] and "sub/d.png" in [i.name for i in deep.items]
    globbed = resolve(str(tmp_path / "**" / "*.png"))
    assert [i.name for i in globbed.items] == ["a.png", "b.png", "sub/d.png"]


def test_resolve_says_what_is_missing(tmp_path):
    with pytest.raises(FileNotFoundError, match="no image files"):
        resolve(str(tmp_path))
    with pytest.raises(FileNotFoundError, match="no such file"):
        resolve(str(tmp_path / "nothing"))
    with pytest.raises(FileNotFoundError, match="matches no image"):
        resolve(str(tmp_path / "*.png"))


def test_bad_write_option_is_a_one_line_usage_error(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["annotate", "x", "--out", "y", "--write", "yolo,parquet"])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and "parquet" in err and len(err.strip().splitlines()) == 1
    assert err.startswith("fastcell annotate: error: argument --write/-w: unknown output(s) ['parquet']")


def test_a_failure_no_command_handles_is_one_line_unless_debugging(monkeypatch, capsys):
    import fastcell.cli.annotate as command

    def broken(args):
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(command, "run", broken)
    assert main(["annotate", "x", "--out", "y"]) == 1
    err = capsys.readouterr().err
    assert err == "fastcell annotate: error: RuntimeError: disk on fire (set FASTCELL_DEBUG=1 for the traceback)\n"
    monkeypatch.setenv("FASTCELL_DEBUG", "1")
    with pytest.raises(RuntimeError, match="disk on fire"):
        main(["annotate", "x", "--out", "y"])


# -- end to end ------------------------------------------------------------------------------------
@needs_stream
def test_annotates_every_readable_image_and_reports_the_rest(tmp_path, source_dir, model_json):
    coco_mod = pytest.importorskip("pycocotools.coco")
    out = tmp_path / "out"
    done = annotate(str(source_dir), "--out", str(out), "--model", model_json, "--write", "all")
    assert done.returncode == 0, done.stderr
    assert f"{READABLE} image(s) annotated" in done.stdout and "2 failed" in done.stdout
    failed = (out / "failed.txt").read_text().splitlines()
    assert [Path(line.split(":")[0]).name for line in failed] == sorted(BAD)
    readable = sorted(p.name for p in source_dir.iterdir() if p.suffix != ".txt" and p.name not in BAD)
    written = sorted(p.name for p in (out / "yolo").glob("*.txt") if p.stem != "classes")
    assert written == sorted(f"{Path(name).stem}.txt" for name in readable)
    gt = coco_mod.COCO(str(out / "annotations.json"))
    images = gt.dataset["images"]
    assert [img["file_name"] for img in images] == readable
    for image in images:  # COCO masks decode to the label images written beside them
        key = Path(image["file_name"]).stem
        labels = cv2.imread(str(out / "labels" / f"{key}.png"), cv2.IMREAD_UNCHANGED)
        assert labels.dtype == np.uint16 and labels.shape == (image["height"], image["width"])
        decoded = np.zeros(labels.shape, np.uint16)
        anns = sorted(gt.loadAnns(gt.getAnnIds(imgIds=[image["id"]])), key=lambda a: a["id"])
        for i, ann in enumerate(anns):
            decoded[gt.annToMask(ann).astype(bool)] = i + 1
        assert np.array_equal(decoded, labels), key
        overlay = cv2.imread(str(out / "overlays" / f"{key}.{'jpg' if key.startswith('Blood') else 'png'}"),
                             cv2.IMREAD_UNCHANGED)
        assert overlay.shape == (*labels.shape, 3) and overlay.dtype == np.uint8
    crops = list((out / "crops" / "deep16").iterdir())
    assert crops and cv2.imread(str(crops[0]), cv2.IMREAD_UNCHANGED).dtype == np.uint16  # depth kept


@needs_stream
def test_killed_run_resumes_to_the_same_bytes(tmp_path, source_dir, model_json):
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    assert annotate(str(source_dir), "--out", str(straight), "--model", model_json).returncode == 0
    assert annotate_killed_after(3, source_dir, resumed, "--model", model_json) == 3
    assert not (resumed / "annotations.json").exists()
    again = annotate(str(source_dir), "--out", str(resumed), "--model", model_json)
    assert again.returncode == 0, again.stderr
    assert f"{READABLE - 3} image(s) annotated" in again.stdout and "3 already done" in again.stdout
    assert_same_tree(straight, resumed)


@needs_stream
def test_shipped_model_resumes_to_the_same_bytes(tmp_path, source_dir, default_model_json):
    """With the real model, batches of 8 cut differently after a resume must not change any byte."""
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    args = ["--model", str(default_model_json), "--batch", "8", "--write", "yolo,coco,csv,voc,labels"]
    assert annotate(str(source_dir), "--out", str(straight), *args).returncode == 0
    assert annotate_killed_after(5, source_dir, resumed, *args) == 5
    assert annotate(str(source_dir), "--out", str(resumed), *args).returncode == 0
    assert_same_tree(straight, resumed)


@pytest.mark.slow
@needs_stream
def test_sigkill_at_any_moment_then_rerun_gives_the_same_bytes(tmp_path, source_dir, model_json):
    for copy in range(2):  # more images, so the kill lands while the run is busy
        for path in sorted(source_dir.glob("Blood*.jpg")):
            shutil.copy(path, source_dir / f"copy{copy}_{path.name}")
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    args = ["--model", model_json, "--write", "yolo,coco,csv,voc,labels,segmented,crops"]
    assert annotate(str(source_dir), "--out", str(straight), *args).returncode == 0
    cmd = [sys.executable, "-m", "fastcell", "annotate", str(source_dir), "--out", str(resumed), *args, *CAP]
    process = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    records = resumed / ".fastcell" / "records"
    deadline = time.monotonic() + 120
    while process.poll() is None and time.monotonic() < deadline:
        if records.is_dir() and any(records.iterdir()):
            process.send_signal(signal.SIGKILL)
            break
        time.sleep(0.005)
    assert process.wait(60) == -signal.SIGKILL, "the run ended before it could be killed"
    assert len(list(records.glob("*.json"))) < READABLE + 12
    assert annotate(str(source_dir), "--out", str(resumed), *args).returncode == 0
    assert_same_tree(straight, resumed)


@needs_stream
def test_rerun_of_a_finished_folder_changes_nothing(tmp_path, source_dir, model_json, capsys):
    out = tmp_path / "out"
    argv = ["annotate", str(source_dir), "--out", str(out), "--model", model_json, "--write", "yolo,csv"]
    assert main(argv) == 0
    before = tree(out)
    assert main(argv) == 0
    assert f"0 image(s) annotated" in capsys.readouterr().out
    assert tree(out) == before


@needs_stream
def test_other_settings_are_refused_then_overwritten(tmp_path, source_dir, model_json, capsys):
    out = tmp_path / "out"
    base = ["annotate", str(source_dir), "--out", str(out), "--model", model_json]
    assert main([*base, "--write", "yolo"]) == 0
    assert main([*base, "--write", "yolo", "--score", "0.6"]) == 1
    assert "other settings" in capsys.readouterr().err
    assert main([*base, "--write", "yolo", "--score", "0.6", "--overwrite"]) == 0
    settings = json.loads((out / ".fastcell" / "run.json").read_text())["settings"]
    assert settings["overrides"] == {"score": 0.6}


@needs_stream
def test_frames_without_cells_give_empty_yolo_files_and_valid_coco(tmp_path, source_dir, model_json):
    coco_mod = pytest.importorskip("pycocotools.coco")
    out = tmp_path / "out"
    assert main(["annotate", str(source_dir), "--out", str(out), "--model", model_json, "--score", "0.9999",
                 "--write", "yolo,coco,csv", "-q"]) == 0
    assert {p.read_bytes() for p in (out / "yolo").glob("*.txt") if p.stem != "classes"} == {b""}
    gt = coco_mod.COCO(str(out / "annotations.json"))
    assert len(gt.getImgIds()) == READABLE and gt.getAnnIds() == []
    assert (out / "cells.csv").read_text().splitlines()[1:] == []


@needs_stream
def test_nothing_readable_exits_1(tmp_path, model_json, capsys):
    src = tmp_path / "bad"
    src.mkdir()
    (src / "a.png").write_bytes(b"")
    (src / "b.jpg").write_bytes(b"garbage")
    assert main(["annotate", str(src), "--out", str(tmp_path / "out"), "--model", model_json]) == 1
    err = capsys.readouterr().err
    assert "no image could be read" in err
    assert main(["annotate", str(tmp_path / "missing"), "--out", str(tmp_path / "out2"), "--model", model_json]) == 1
    assert main(["annotate", str(src), "--out", str(tmp_path / "out3"), "--model", str(tmp_path / "no.json")]) == 1
    assert "cannot open model" in capsys.readouterr().err


@needs_stream
def test_video_source(tmp_path, bccd_images, model_json):
    coco_mod = pytest.importorskip("pycocotools.coco")
    video = tmp_path / "clip.avi"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"MJPG"), 10, (640, 480))
    assert writer.isOpened()
    for path in bccd_images[:4]:
        writer.write(cv2.imread(str(path)))
    writer.release()
    out = tmp_path / "out"
    assert main(["annotate", str(video), "--out", str(out), "--model", model_json, "--write", "yolo,coco", "-q"]) == 0
    assert sorted(p.stem for p in (out / "yolo").glob("clip_*.txt")) == [f"clip_{i:06d}" for i in range(4)]
    images = coco_mod.COCO(str(out / "annotations.json")).dataset["images"]
    assert [img["frame_index"] for img in images] == [0, 1, 2, 3]


@needs_stream
def test_float_and_signed_tiffs_are_skipped_and_a_rerun_goes_on(tmp_path, bccd_images, model_json, capsys):
    """Such TIFFs decode, but fastcell takes uint8/uint16 only: a run must neither stop on them nor
    stop on them again when rerun."""
    src = tmp_path / "src"
    src.mkdir()
    for path in bccd_images[:2]:
        shutil.copy(path, src / path.name)
    image = cv2.imread(str(bccd_images[0]))
    assert cv2.imwrite(str(src / "float32.tiff"), image.astype(np.float32) / 255)
    assert cv2.imwrite(str(src / "int16.tiff"), image[:, :, 0].astype(np.int16) - 128)
    out = tmp_path / "out"
    for annotated in (2, 0):  # the run, then a rerun
        assert main(["annotate", str(src), "--out", str(out), "--model", model_json, "--write", "yolo,coco",
                     *CAP]) == 0
        printed = capsys.readouterr().out
        assert f"{annotated} image(s) annotated" in printed and "2 failed" in printed
        failed = (out / "failed.txt").read_text().splitlines()
        assert [Path(line.split(":")[0]).name for line in failed] == ["float32.tiff", "int16.tiff"]
        assert "unsupported image" in failed[0] and "dtype float32" in failed[0] and "dtype int16" in failed[1]
    written = sorted(p.stem for p in (out / "yolo").glob("*.txt") if p.stem != "classes")
    assert written == sorted(p.stem for p in bccd_images[:2])


@needs_stream
@pytest.mark.parametrize("what", ["missing", "bad_video", "bad_model"])
def test_bad_input_is_one_line_on_stderr_and_status_1(tmp_path, bccd_images, model_json, capsys, what):
    video = tmp_path / "clip.avi"
    video.write_bytes(b"not a video at all" * 64)
    src = tmp_path / "src"
    src.mkdir()
    shutil.copy(bccd_images[0], src / bccd_images[0].name)
    source, model, message = {
        "missing": (tmp_path / "missing", model_json, "no such file, folder or pattern"),
        "bad_video": (video, model_json, f"cannot read {str(video)!r}: cannot open {video} with OpenCV"),
        "bad_model": (src, str(tmp_path / "no.json"), "cannot open model"),
    }[what]
    out = tmp_path / "out"
    assert main(["annotate", str(source), "--out", str(out), "--model", model, "-q"]) == 1
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1, err
    assert not out.exists()  # refused before anything was written


# -- a read that hangs: the run stops, and says so, with what it finished written out -----------------------
@needs_stream
def test_a_stalled_read_stops_the_run_after_finishing_the_files_and_the_summary(tmp_path, source_dir, model_json,
                                                                               monkeypatch, capsys):
    import threading

    import fastcell.cli.annotate as command
    from fastcell.io.sources import ImageFiles

    monkeypatch.setattr(command, "READ_STALL_TIMEOUT", 2.0)
    hang = threading.Event()
    read = ImageFiles._read

    def hanging_read(self, path):
        if self.paths.index(path) >= 2:  # a dead network drive after the first two images
            hang.wait(120)
        return read(self, path)

    monkeypatch.setattr(ImageFiles, "_read", hanging_read)
    out = tmp_path / "out"
    try:
        code = main(["annotate", str(source_dir), "--out", str(out), "--model", model_json, "--write", "yolo,coco",
                     *CAP])
    finally:
        hang.set()
    printed = capsys.readouterr()
    assert code == 1
    assert "2 image(s) annotated" in printed.out  # the summary is printed...
    assert "stopped early" in printed.err and "StreamStalled" in printed.err  # ...and the stop explained
    first_two = sorted(p.name for p in source_dir.iterdir())[:2]
    coco = json.loads((out / "annotations.json").read_text())  # the writer finished its files
    assert [image["file_name"] for image in coco["images"]] == first_two
    monkeypatch.setattr(ImageFiles, "_read", read)
    assert main(["annotate", str(source_dir), "--out", str(out), "--model", model_json, "--write", "yolo,coco",
                 *CAP]) == 0  # a rerun resumes
    assert f"{READABLE - 2} image(s) annotated" in capsys.readouterr().out


# -- argument checks -------------------------------------------------------------------------------------------
@pytest.mark.parametrize("argv, message", [
    (["--batch", "0"], "argument --batch: expected a positive integer (1 or more), got 0"),
    (["--batch", "-2"], "argument --batch: expected a positive integer (1 or more), got -2"),
    (["--max-detections", "0"], "argument --max-detections: expected a positive integer (1 or more), got 0"),
    (["--max-detections", "many"], "argument --max-detections: expected a positive integer, got 'many'"),
])
def test_counts_below_one_are_usage_errors(argv, message, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["annotate", "x", "--out", "y", *argv])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and len(err.strip().splitlines()) == 1
    assert err.startswith(f"fastcell annotate: error: {message}")


@pytest.mark.parametrize("command", ["annotate", "stream"])
def test_device_and_precision_help_name_every_backend_and_precision(command):
    import argparse
    import importlib

    parser = argparse.ArgumentParser()
    importlib.import_module(f"fastcell.cli.{command}").add_arguments(parser)
    actions = {a.dest: a for a in parser._actions}
    for name in ("auto", "cpu", "openvino", "onnxruntime", "tensorrt", "torch"):
        assert name in actions["device"].help
    assert set(actions["precision"].choices) == {"fp32", "fp16", "bf16", "int8"}  # fp16: TensorRT's default


@needs_stream
def test_fp16_on_the_cpu_is_a_one_line_model_error(tmp_path, bccd_images, model_json, capsys):
    out = tmp_path / "out"
    assert main(["annotate", str(bccd_images[0]), "--out", str(out), "--model", model_json, "--device", "cpu",
                 "--precision", "fp16", "-q"]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "precision='fp16' needs the tensorrt backend" in err


# -- hostile names, links, sizes and formats (issue 9) ------------------------------------------------------
def _png_header(width: int, height: int) -> bytes:
    import struct
    import zlib

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + struct.pack(">I", 13) + b"IHDR" + ihdr + struct.pack(">I", zlib.crc32(b"IHDR" + ihdr))


def _fs(path: Path, name: bytes) -> str:
    """The str path of a file named with raw bytes inside ``path``."""
    return os.fsdecode(os.fsencode(path) + b"/" + name)


@needs_stream
def test_a_folder_of_hostile_entries_is_annotated_once_each_and_every_other_entry_reported(tmp_path, bccd_images,
                                                                                         model_json):
    """Names that are not UTF-8 or hold line breaks and backslashes, names whose outputs would collide
    (with each other, with yolo/classes.txt, with a folder's crops, with temporaries), links, a loop,
    special files, huge files and unsupported formats, in one folder with -r: every good image is
    annotated exactly once, every other entry is in the summary and failed.txt with its reason, and
    a rerun changes nothing."""
    from fastcell.io._names import text_name

    coco_mod = pytest.importorskip("pycocotools.coco")
    src = tmp_path / "src"
    (src / "x").mkdir(parents=True)
    jpeg = bccd_images[0].read_bytes()
    good = [b"plain.jpg", b"bad_\xff\xfe.jpg", b"two\nlines.jpg", b"back\\slash.jpg", "\u00fcml\u00e4ut.jpg".encode(),
            b"classes.jpg", b"data.jpg", b"img.jpg", b"img.png", b"img.jpg.png", b"x.jpg", b"x/inner.jpg",
            b"foo.fastcell-tmp.jpg", b".hidden.jpg", b"A.jpg", b"a.png", b"gray.png"]
    for name in good:
        data = jpeg
        if name.endswith(b".png"):
            ok, buf = cv2.imencode(".png", cv2.imread(str(bccd_images[1]), cv2.IMREAD_GRAYSCALE if b"gray" in name
                                                      else cv2.IMREAD_COLOR))
            data = buf.tobytes()
        Path(_fs(src, name)).write_bytes(data)
    (src / "big.png").write_bytes(_png_header(16000, 16000) + b"\0" * 4096)
    with open(src / "huge.jpg", "wb") as f:  # 10 GB, sparse: must not be read whole
        f.write(jpeg[:2048])
        f.truncate(10 * 2**30)
    (src / "empty.png").write_bytes(b"")
    (src / "corrupt.jpg").write_bytes(b"\xff\xd8 not really" + jpeg[100:300])
    os.mkfifo(src / "fifo.jpg")
    os.symlink("missing.png", src / "dangling.png")
    os.symlink("loop.jpg", src / "loop.jpg")
    os.symlink("plain.jpg", src / "same_as_plain.jpg")
    os.symlink(".", src / "x" / "again")  # a folder loop
    (src / "dir.png").mkdir()  # with -r a folder is entered, whatever its name (test_io_sources: without -r)
    (src / "anim.gif").write_bytes(b"GIF89a")
    (src / "notes.txt").write_text("ignored")

    out = src / "out"  # inside the source, read with -r: never read back
    args = ["annotate", str(src), "--out", str(out), "--model", model_json, "-r", "--write", "all", *CAP]
    done = subprocess.run([sys.executable, "-m", "fastcell", *args], capture_output=True, timeout=300)
    stdout, stderr = done.stdout.decode("utf-8"), done.stderr.decode("utf-8", "backslashreplace")
    assert done.returncode == 0, stderr
    assert "Traceback" not in stderr
    n_good = len(good)
    assert f"{n_good} image(s) annotated" in stdout and "4 failed, 6 skipped" in stdout, stdout
    assert f"{n_good} image(s) in" in stdout and "ignored 1 other file(s), not images: .txt ×1" in stdout

    failed = (out / "failed.txt").read_bytes().decode("utf-8").splitlines()
    reasons = {line.split(": ", 1)[0]: line.split(": ", 1)[1] for line in failed}
    expected = {
        "anim.gif": "unsupported image format", "dangling.png": "a dangling symlink (to missing.png)",
        "fifo.jpg": "a FIFO", "loop.jpg": "a symlink loop",
        "same_as_plain.jpg": "the same file as", "x/again": "a folder already listed",
        "big.png": "16000x16000 = 256,000,000 pixels, over the limit", "huge.jpg": "file of 10,737,418,240 bytes",
        "empty.png": "empty file", "corrupt.jpg": "not a decodable image",
    }
    assert sorted(reasons) == sorted(f"{src}/{name}" for name in expected)
    for name, reason in expected.items():
        assert reasons[f"{src}/{name}"].startswith(reason), (name, reasons[f"{src}/{name}"])
    for line in failed:
        assert line in stdout

    gt = coco_mod.COCO(str(out / "annotations.json"))
    file_names = [image["file_name"] for image in gt.dataset["images"]]
    assert sorted(file_names) == sorted(text_name(os.fsdecode(name)) for name in good)  # each exactly once
    for image in gt.dataset["images"]:
        assert gt.getAnnIds(imgIds=[image["id"]]), image["file_name"]  # nobody's cells were lost
    csv_names = {row.split(",")[0] for row in (out / "cells.csv").read_bytes().decode("utf-8").splitlines()[1:]}
    assert csv_names <= set(file_names) and len(csv_names) >= n_good - 2  # names with a backslash are quoted
    yolo = [p for p in (out / "yolo").rglob("*.txt")]
    assert len(yolo) == n_good + 1 and (out / "yolo" / "classes.txt").read_text().splitlines() == ["RBC", "WBC", "Platelets"]
    for sub in ("x.jpg", "x/inner", "foo.fastcell-tmp"):  # crops of x.jpg beside x/, and of a temporary's look-alike
        assert any((out / "crops" / sub).iterdir()), sub
    assert not os.listdir(out / ".fastcell" / "tmp")

    before = tree(out)
    again = subprocess.run([sys.executable, "-m", "fastcell", *args], capture_output=True, timeout=300)
    assert again.returncode == 0 and "0 image(s) annotated" in again.stdout.decode() \
        and f"{n_good} already done" in again.stdout.decode()
    assert tree(out) == before  # nothing read from out/, nothing lost, nothing added


@needs_stream
@pytest.mark.parametrize("where", ["inside", "same"])
def test_outputs_are_never_read_back_nor_written_over_inputs(tmp_path, bccd_images, model_json, capsys, where):
    src = tmp_path / "src"
    (src / "sub").mkdir(parents=True)
    for i, path in enumerate(bccd_images[:3]):
        shutil.copy(path, (src / "sub" if i == 2 else src) / path.name)
    inputs = tree(src)
    out = src / "out" if where == "inside" else src
    argv = ["annotate", str(src), "--out", str(out), "--model", model_json, "-r", "--write", "yolo,coco,segmented,crops"]
    for _ in range(3):  # reruns never grow the COCO file: outputs are not inputs
        assert main(argv) == 0
        images = json.loads((out / "annotations.json").read_text())["images"]
        assert sorted(i["file_name"] for i in images) == sorted(p.relative_to(src).as_posix()
                                                                for p in src.rglob("*.jpg") if p.as_posix() in
                                                                {(src / k).as_posix() for k in inputs})
        assert len(images) == 3
    assert {k: v for k, v in tree(src).items() if k in inputs} == inputs  # no input was written over
    glob_run = ["annotate", str(src / "**" / "*.jpg"), "--out", str(out), "--model", model_json,
                "--write", "yolo,coco,segmented,crops", "--overwrite"]
    assert main(glob_run) == 0
    assert len(json.loads((out / "annotations.json").read_text())["images"]) == 3
    capsys.readouterr()
    assert main(["annotate", str(out / "segmented"), "--out", str(out), "--model", model_json]) == 1
    assert "is inside" in capsys.readouterr().err


@needs_stream
def test_two_sources_are_not_merged_into_one_output_folder(tmp_path, bccd_images, model_json, capsys):
    a, b, out = tmp_path / "a", tmp_path / "b", tmp_path / "out"
    for folder, images in ((a, bccd_images[:2]), (b, bccd_images[2:4])):
        folder.mkdir()
        for path in images:
            shutil.copy(path, folder / path.name)
    assert main(["annotate", str(a), "--out", str(out), "--model", model_json, "-q"]) == 0
    before = tree(out)
    capsys.readouterr()
    assert main(["annotate", str(b), "--out", str(out), "--model", model_json, "-q"]) == 1
    err = capsys.readouterr().err
    assert "holds annotations of another source" in err and str(a) in err and "--overwrite" in err
    assert tree(out) == before
    os.chdir(tmp_path)  # the same source named another way is the same source
    assert main(["annotate", "a/", "--out", str(out), "--model", model_json, "-q"]) == 0
    assert main(["annotate", str(b), "--out", str(out), "--model", model_json, "-q", "--overwrite"]) == 0
    images = json.loads((out / "annotations.json").read_text())["images"]
    assert sorted(i["file_name"] for i in images) == sorted(p.name for p in bccd_images[2:4])


@pytest.mark.parametrize("option, value", [("--score", "nan"), ("--score", "inf"), ("--score", "2"), ("--score", "-0.1"),
                                           ("--nms-iou", "-5"), ("--nms-iou", "NaN"), ("--workers", "0"),
                                           ("--workers", "-1"), ("--max-pixels", "-1"), ("--batch", "0"),
                                           ("--max-detections", "1.5")])
def test_every_number_is_checked_before_anything_is_written(tmp_path, capsys, option, value):
    out = tmp_path / "out"
    with pytest.raises(SystemExit) as exit_info:
        main(["annotate", str(tmp_path), "--out", str(out), option, value])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and f"argument {option}" in err and len(err.strip().splitlines()) == 1
    assert not out.exists()  # no run.json recording a refused setting


@needs_stream
def test_max_pixels_option_refuses_large_frames_and_zero_lifts_the_limit(tmp_path, bccd_images, model_json, capsys):
    src = tmp_path / "src"
    src.mkdir()
    shutil.copy(bccd_images[0], src / "a.jpg")  # 640 x 480 = 307,200 pixels
    assert main(["annotate", str(src), "--out", str(tmp_path / "o1"), "--model", model_json, "--max-pixels", "300000"]) == 1
    assert "over the limit of 300,000" in capsys.readouterr().out
    assert main(["annotate", str(src), "--out", str(tmp_path / "o2"), "--model", model_json, "--max-pixels", "0"]) == 0


# ``python -m fastcell ARGS`` that says "ready" once the interpreter has started (site, .pth files:
# outside fastcell's reach) and the fastcell package is imported, so the interrupt lands in fastcell.
_RUN_WHEN_READY = """
import faulthandler, runpy, signal, sys
faulthandler.register(signal.SIGUSR1, all_threads=True)  # the test asks for the stacks of a hung run
import fastcell
sys.argv = ["fastcell", *sys.argv[1:]]
sys.stderr.write("ready\\n"); sys.stderr.flush()
runpy.run_module("fastcell", run_name="__main__", alter_sys=True)
"""


@needs_stream
@pytest.mark.parametrize("delay", [0.02, 0.05, 0.1, 0.2, 0.4, 0.8])  # 0: runpy itself
def test_ctrl_c_at_any_moment_prints_no_traceback(tmp_path, source_dir, model_json, delay):
    cmd = [sys.executable, "-c", _RUN_WHEN_READY, "annotate", str(source_dir), "--out", str(tmp_path / "out"),
           "--model", model_json, *CAP]
    process = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert process.stderr.readline() == "ready\n"
    time.sleep(delay)
    process.send_signal(signal.SIGINT)
    try:
        _, err = process.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        process.send_signal(signal.SIGUSR1)
        time.sleep(1)
        process.kill()
        pytest.fail(f"the run did not end after Ctrl-C; its threads: {process.communicate()[1][-5000:]}")
    assert "Traceback" not in err, err
    assert process.returncode in (0, 130, -signal.SIGINT), (process.returncode, err)  # -2: during exit
    if process.returncode == 130:
        assert err.strip().splitlines()[-1] == "interrupted"
