"""What ``--engine ray`` annotates: list files, manifests and URIs resolve to the same images and output
names as the single-process resolver does for the folder (no Ray needed)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from fastcell.cli.annotate import resolve
from fastcell.distributed import resolve_source
from fastcell.distributed._sources import _glob_regex, is_uri

SAMPLES = Path(__file__).parent / "data" / "bccd"


@pytest.fixture()
def folder(tmp_path: Path) -> Path:
    src = tmp_path / "images"
    (src / "sub").mkdir(parents=True)
    for i, path in enumerate(sorted(SAMPLES.glob("*.jpg"))):
        shutil.copy(path, (src / "sub" if i % 2 else src) / path.name)
    return src


def _keys(plan) -> list[tuple[str, str, str]]:
    return [(Path(p).name, item.key, item.name) for p, item in zip(plan.paths, plan.items)]


def test_list_file_and_manifests_name_images_as_the_folder_does(folder: Path, tmp_path: Path) -> None:
    expected = resolve(str(folder), recursive=True)
    rel = [str(Path(p).relative_to(folder)) for p in expected.paths]
    listing = folder / "list.txt"  # relative to the list's folder, a comment, a blank line, a repeat
    listing.write_text("# images\n" + "\n".join(rel) + "\n\n" + rel[0] + "\n")
    assert _keys(resolve_source(str(listing))) == _keys(expected)

    pa = pytest.importorskip("pyarrow")
    import pyarrow.csv as pcsv
    import pyarrow.parquet as pq

    table = pa.table({"id": list(range(len(rel))), "path": [str(folder / r) for r in rel]})
    pq.write_table(table, tmp_path / "m.parquet")
    pcsv.write_csv(table, tmp_path / "m.csv")
    assert _keys(resolve_source(str(tmp_path / "m.parquet"))) == _keys(expected)
    assert _keys(resolve_source(str(tmp_path / "m.csv"))) == _keys(expected)


def test_uris_name_images_as_local_paths_do(folder: Path) -> None:
    pytest.importorskip("pyarrow")
    uri = folder.as_uri()
    expected = _keys(resolve(str(folder), recursive=True))
    plan = resolve_source(uri, recursive=True)
    assert all(p.startswith("file:///") for p in plan.paths)
    assert _keys(plan) == expected
    assert _keys(resolve_source(uri)) == _keys(resolve(str(folder)))  # not recursive: top level only
    # '**/' crosses folders (as glob.glob(recursive=True)); '*' does not
    assert _keys(resolve_source(f"{uri}/**/*.jpg")) == expected
    assert [k for _, k, _ in _keys(resolve_source(f"{uri}/sub/*.jpg"))] == \
        [k for _, k, _ in _keys(resolve(str(folder / "sub" / "*.jpg")))]


def test_glob_regex_matches_like_glob() -> None:
    pattern = _glob_regex("s3://b/x/**/*.png")
    assert pattern.fullmatch("s3://b/x/a.png") and pattern.fullmatch("s3://b/x/d/e/a.png")
    assert not pattern.fullmatch("s3://b/x/a.jpg")
    one = _glob_regex("s3://b/*/img_[0-9].tif")
    assert one.fullmatch("s3://b/d/img_3.tif") and not one.fullmatch("s3://b/d/e/img_3.tif")
    assert not one.fullmatch("s3://b/d/img_a.tif")
    assert is_uri("s3://b/k") and is_uri("file:///tmp") and not is_uri("/tmp/a://b") and not is_uri("C:\\x")


def test_bad_sources_say_what_is_wrong(tmp_path: Path) -> None:
    empty = tmp_path / "empty.txt"
    empty.write_text("# nothing\n\n")
    with pytest.raises(FileNotFoundError, match="names no images"):
        resolve_source(str(empty))
    with pytest.raises(FileNotFoundError, match="no such file"):
        resolve_source(str(tmp_path / "missing"))
    video = tmp_path / "clip.mp4"
    video.write_bytes(b"\0" * 16)
    with pytest.raises(ValueError, match="video"):
        resolve_source(str(video))
    with pytest.raises(TypeError, match="source must be"):
        resolve_source(3)  # type: ignore[arg-type]
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"a": ["x.jpg"], "b": ["y.jpg"]}), tmp_path / "two.parquet")
    with pytest.raises(ValueError, match=r"needs a column named one of .*got columns \['a', 'b'\]"):
        resolve_source(str(tmp_path / "two.parquet"))


def test_ray_stays_out_of_the_default_import_path() -> None:
    code = ("import sys, fastcell, fastcell.cli.annotate, fastcell.distributed\n"
            "from fastcell.cli import build_parser\n"
            "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('ray', 'pyarrow', 'pandas'))\n"
            "assert not bad, bad\n")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_missing_ray_says_what_to_install(folder: Path, tmp_path: Path, monkeypatch) -> None:
    import fastcell.distributed as dist

    monkeypatch.setitem(sys.modules, "ray", None)  # import ray → ImportError
    with pytest.raises(ImportError, match=r"pip install \"fastcell\[ray\]\""):
        dist.annotate(folder, tmp_path / "out")


def test_outputs_are_never_inputs(folder: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    (out / "segmented").mkdir(parents=True)
    own = out / "segmented" / "BloodImage_00007.jpg"  # what an earlier run wrote
    shutil.copy(SAMPLES / "BloodImage_00007.jpg", own)
    listing = tmp_path / "list.txt"
    listing.write_text(f"{folder / 'BloodImage_00007.jpg'}\n{own}\n")
    plan = resolve_source(str(listing), out=out)
    assert plan.paths == [str(folder / "BloodImage_00007.jpg")]
    assert [p for p, _ in plan.skipped] == [str(own)] and "output folders" in plan.skipped[0][1]
    only = tmp_path / "only.txt"
    only.write_text(f"{own}\n")
    with pytest.raises(FileNotFoundError, match="inside the output folders"):
        resolve_source(str(only), out=out)
    with pytest.raises(ValueError, match="inside"):  # a folder source inside them: as single-process annotate
        resolve_source(str(out / "segmented"), out=out)
