"""``fastcell annotate --engine ray`` on a local 2-CPU Ray cluster, started once for the module.

The reference is single-process ``fastcell annotate`` on the same images: the distributed run must
leave the same annotation files, survive an actor process killed mid-run without losing or
duplicating an image, and resume. The model is the shipped default (deterministic).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import time
from pathlib import Path

import numpy as np
import pytest

from fastcell.cli import main

ray = pytest.importorskip("ray", reason="the distributed engine needs Ray: pip install 'fastcell[ray]'")
pd = pytest.importorskip("pandas")
pytest.importorskip("pyarrow")

from fastcell.distributed import DETECTIONS_FILE, annotate  # noqa: E402

pytestmark = [
    pytest.mark.slow,
    pytest.mark.filterwarnings("ignore::DeprecationWarning"),  # Ray's own, from its worker plumbing
]
SAMPLES = Path(__file__).parent / "data" / "bccd"
COPIES = 3  # 12 images from the 4 samples, so both actors have work queued when one is killed


@pytest.fixture(scope="module")
def cluster():
    if ray.is_initialized():  # pragma: no cover - another module left one running
        ray.shutdown()
    ray.init(num_cpus=2, include_dashboard=False, logging_level="ERROR")
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def source(tmp_path_factory, default_model_json) -> Path:
    """12 real BCCD images (4 samples, 3 copies each under other names) and one corrupt file."""
    src = tmp_path_factory.mktemp("distributed") / "src"
    src.mkdir()
    for copy in range(COPIES):
        for path in sorted(SAMPLES.glob("*.jpg")):
            shutil.copy(path, src / f"c{copy}_{path.name}")
    (src / "corrupt.jpg").write_bytes(b"\xff\xd8 not a jpeg")
    return src


@pytest.fixture(scope="module")
def reference(source: Path, tmp_path_factory) -> Path:
    """The single-process run of the same source."""
    out = tmp_path_factory.mktemp("distributed") / "single"
    assert main(["annotate", str(source), "--out", str(out), "-q", "--write", "yolo,coco,csv,labels"]) == 0
    return out


def _files(out: Path, skip: tuple[str, ...] = ()) -> dict[str, bytes]:
    """Every file of a run folder except the lock, temporaries and the distributed engine's own
    additions (and ``skip``)."""
    files = {}
    for path in sorted(out.rglob("*")):
        name = path.relative_to(out).as_posix()
        if path.is_file() and name not in (".fastcell/lock", DETECTIONS_FILE, *skip) \
                and not name.startswith((".fastcell/cells/", ".fastcell/tmp/")):
            files[name] = path.read_bytes()
    return files


def _check_same_as(out: Path, reference: Path, skip: tuple[str, ...] = ()) -> None:
    got, want = _files(out, skip), _files(reference, skip)
    assert sorted(got) == sorted(want)
    differ = [name for name in want if got[name] != want[name]]
    assert not differ, f"files differ from the single-process run: {differ[:5]}"
    leftovers = [p for p in out.rglob("*") if "fastcell-tmp" in p.name]
    tmp = out / ".fastcell" / "tmp"
    leftovers += [p for p in tmp.iterdir()] if tmp.is_dir() else []
    assert not leftovers, f"temporary files left behind: {leftovers[:3]}"


def _check_detections(out: Path) -> None:
    """The Parquet table against the COCO file (read with json, independently of the writer)."""
    coco = json.loads((out / "annotations.json").read_text())
    table = pd.read_parquet(out / DETECTIONS_FILE)
    assert len(table) == len(coco["annotations"]) > 0
    names = {im["id"]: im["file_name"] for im in coco["images"]}
    anns = sorted(coco["annotations"], key=lambda a: a["id"])  # ids follow image order, then detection order
    assert list(table["image"]) == [names[a["image_id"]] for a in anns]
    assert list(table["image_id"]) == [a["image_id"] for a in anns]
    assert list(table["class_id"] + 1) == [a["category_id"] for a in anns]
    categories = {c["id"]: c["name"] for c in coco["categories"]}
    assert list(table["class"]) == [categories[a["category_id"]] for a in anns]
    xywh = np.array([a["bbox"] for a in anns])
    np.testing.assert_allclose(table[["x1", "y1"]].to_numpy(), xywh[:, :2], atol=0.006)
    sides = table[["x2", "y2"]].to_numpy() - table[["x1", "y1"]].to_numpy()
    np.testing.assert_allclose(sides, xywh[:, 2:], atol=0.011)
    np.testing.assert_allclose(table["score"], [a["score"] for a in anns], atol=6e-6)
    np.testing.assert_array_equal(table["area"], [a["area"] for a in anns])  # mask pixels, exact
    assert (table.groupby("image_id")["cell"].apply(lambda c: list(c) == list(range(len(c))))).all()


def test_same_annotations_as_single_process(cluster, source: Path, reference: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "ray"
    code = main(["annotate", str(source), "--out", str(out), "--engine", "ray", "--workers", "2", "--batch", "2",
                 "--write", "yolo,coco,csv,labels"])
    assert code == 0
    printed = capsys.readouterr().out
    assert f"{4 * COPIES} image(s) annotated" in printed and "1 failed" in printed
    assert f"{DETECTIONS_FILE}:" in printed
    _check_same_as(out, reference)  # COCO, CSV, YOLO, classes.txt, label images, failed.txt, records
    assert (out / "failed.txt").read_text().startswith(str(source / "corrupt.jpg"))
    _check_detections(out)


def test_killed_actors_lose_and_duplicate_nothing(cluster, source: Path, reference: Path, tmp_path: Path) -> None:
    """SIGKILL the first actor that reports, then the other one: what they had in flight is
    retried by Ray, and the images left after the second kill can only run on a restarted actor."""
    out = tmp_path / "ray"
    listing = tmp_path / "images.txt"  # the images as file:// URIs, read as any URI is (pyarrow)
    listing.write_text("".join(f"{p.as_uri()}\n" for p in sorted(source.glob("c[0-9]_*.jpg"))))
    killed: dict[int, float] = {}  # pid → time.time() of its kill
    rows: list[dict] = []

    def kill(row: dict) -> None:  # runs on the driver as results arrive
        rows.append(row)
        pid = int(row["worker"].rsplit(":", 1)[1])
        if len(killed) < 2 and pid not in killed and len(rows) < 4 * COPIES:
            os.kill(pid, signal.SIGKILL)
            killed[pid] = time.time()

    summary = annotate(listing, out, formats=("yolo", "coco", "csv", "labels"), workers=2, batch_size=1,
                       progress=False, on_image=kill)
    assert summary.error is None
    keys = [r["key"] for r in rows]
    assert len(keys) == len(set(keys)) == 4 * COPIES  # every image reported once
    assert summary.annotated == 4 * COPIES and summary.images == 4 * COPIES
    assert killed, "no actor was killed while images were left"
    pids = [int(r["worker"].rsplit(":", 1)[1]) for r in rows]
    assert not [p for p, r in zip(pids, rows) if p in killed and r["time"] > killed[p]], "a killed actor kept working"
    after = [p for p, r in zip(pids, rows) if len(killed) == 2 and r["time"] > max(killed.values())]
    assert all(p not in killed for p in after)  # what was left after both kills ran on restarted actors
    _check_same_as(out, reference, skip=("failed.txt", ".fastcell/run.json"))  # the list names no corrupt file
    _check_detections(out)


def test_stopped_run_resumes_from_the_finished_images(cluster, source: Path, reference: Path, tmp_path: Path) -> None:
    out = tmp_path / "ray"
    formats = ("yolo", "coco", "csv", "labels")

    def stop_after_three(row: dict, seen: list = []) -> None:  # noqa: B006 - a counter across calls
        seen.append(row)
        if len(seen) == 3:
            raise KeyboardInterruptLike("stopped")

    one = annotate(source, out, formats=formats, workers=2, batch_size=1, progress=False, on_image=stop_after_three)
    assert isinstance(one.error, KeyboardInterruptLike)
    records = out / ".fastcell" / "records"
    assert one.images == len(list(records.glob("*.json"))) >= 3  # the merged files hold what was finished
    coco = json.loads((out / "annotations.json").read_text())
    assert len(coco["images"]) == one.images
    # However far the actors got before they were stopped, make five images unfinished, as a kill
    # before their records were written leaves them (their other files stay, to be overwritten).
    for name in sorted(p.stem for p in source.glob("c*.jpg"))[::2][:5]:
        (records / f"{name}.json").unlink(missing_ok=True)
    stamps = {p: p.stat().st_mtime_ns for p in records.glob("*.json")}
    two = annotate(source, out, formats=formats, workers=2, batch_size=2, progress=False)
    assert two.error is None
    assert (two.already, two.annotated, len(two.failed)) == (len(stamps), 4 * COPIES - len(stamps), 1)
    assert {p: p.stat().st_mtime_ns for p in stamps} == stamps, "finished images were written again"
    _check_same_as(out, reference)
    _check_detections(out)


class KeyboardInterruptLike(Exception):
    """What a user stopping the run looks like to the driver, without stopping pytest."""
