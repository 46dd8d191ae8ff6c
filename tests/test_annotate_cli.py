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


def test_bad_write_option_is_a_usage_error(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["annotate", "x", "--out", "y", "--write", "yolo,parquet"])
    assert exit_info.value.code == 2 and "parquet" in capsys.readouterr().err


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
    killed = annotate(str(source_dir), "--out", str(resumed), "--model", model_json,
                      env={"FASTCELL_TEST_KILL_AFTER": "3"})
    assert killed.returncode == -signal.SIGKILL
    assert len(list((resumed / ".fastcell" / "records").glob("*.json"))) == 3
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
    killed = annotate(str(source_dir), "--out", str(resumed), *args, env={"FASTCELL_TEST_KILL_AFTER": "5"})
    assert killed.returncode == -signal.SIGKILL
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
    assert settings["overrides"] == {"score_threshold": 0.6}


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
