"""The TensorRT engine cache without TensorRT or a GPU: keys, staleness, rebuild/refuse, metadata.

The builder is a stand-in that writes a small file; everything else is the real cache logic that
decides whether a serialized engine may ever be handed to TensorRT.
"""

from __future__ import annotations

import importlib.util
import json
import logging
from pathlib import Path

import pytest

from fastcell.export import calibration_images
from fastcell.export import tensorrt as te

H100 = te.GpuTarget("NVIDIA H100 80GB HBM3", "9.0", "10.8.0.43")
A100 = te.GpuTarget("NVIDIA A100-SXM4-80GB", "8.0", "10.8.0.43")
H100_NEWER_TRT = te.GpuTarget("NVIDIA H100 80GB HBM3", "9.0", "10.9.0.34")


@pytest.fixture
def onnx_file(tmp_path: Path) -> Path:
    path = tmp_path / "model.onnx"
    path.write_bytes(b"not really onnx, but the cache only hashes it" * 10)
    return path


class CountingBuilder:
    """Writes a fake engine naming the key it was built for, and counts the builds."""

    def __init__(self) -> None:
        self.calls: list[te.EngineKey] = []

    def __call__(self, onnx: Path, out: Path, key: te.EngineKey) -> None:
        assert onnx.is_file()
        out.write_bytes(json.dumps(key.to_dict()).encode())
        self.calls.append(key)


def key_for(onnx: Path, target: te.GpuTarget = H100, precision: str = "fp16",
            profile: te.BatchProfile = te.BatchProfile(), calibration: str = "") -> te.EngineKey:
    return te.engine_key(onnx, target, precision, profile, 416, calibration)


# -- keys -------------------------------------------------------------------------------------------
def test_key_records_the_onnx_sha256(onnx_file: Path) -> None:
    import hashlib

    assert key_for(onnx_file).onnx_sha256 == hashlib.sha256(onnx_file.read_bytes()).hexdigest()


@pytest.mark.parametrize("change", [
    {"gpu_name": "NVIDIA A100-SXM4-80GB"}, {"compute_capability": "8.9"}, {"tensorrt_version": "10.9.0"},
    {"precision": "fp32"}, {"batch_min": 2}, {"batch_opt": 16}, {"batch_max": 64}, {"input_size": 608},
    {"onnx_sha256": "0" * 64}, {"calibration": "8:abc"},
])
def test_every_key_field_changes_the_digest(onnx_file: Path, change: dict) -> None:
    import dataclasses

    key = key_for(onnx_file)
    changed = dataclasses.replace(key, **change)
    assert changed.digest() != key.digest()
    assert te.engine_path_for(changed, "/c").name != te.engine_path_for(key, "/c").name


def test_digest_is_deterministic_and_short(onnx_file: Path) -> None:
    a, b = key_for(onnx_file), key_for(onnx_file)
    assert a == b and a.digest() == b.digest()
    assert len(a.digest()) == 20 and int(a.digest(), 16) >= 0


def test_engine_file_name_says_what_it_is(onnx_file: Path) -> None:
    key = key_for(onnx_file, precision="fp16", profile=te.BatchProfile(1, 4, 16))
    path = te.engine_path_for(key, "/cache", name="bccd v2/x")
    assert path.parent == Path("/cache")
    assert path.name == f"bccd_v2_x-fp16-b16-{key.digest()}.engine"
    assert te.metadata_path(path).name == f"bccd_v2_x-fp16-b16-{key.digest()}.json"


@pytest.mark.parametrize("sizes", [(0, 1, 1), (2, 1, 4), (1, 8, 4)])
def test_batch_profile_must_be_ordered(sizes: tuple[int, int, int]) -> None:
    with pytest.raises(ValueError, match="1 <= min <= opt <= max"):
        te.BatchProfile(*sizes)


def test_int8_needs_calibration_images(onnx_file: Path) -> None:
    with pytest.raises(ValueError, match="calibration images"):
        key_for(onnx_file, precision="int8")
    with pytest.raises(ValueError, match="precision must be one of"):
        key_for(onnx_file, precision="bf16")


def test_calibration_id_follows_the_image_set(tmp_path: Path) -> None:
    images = []
    for i in range(3):
        p = tmp_path / f"f{i}.png"
        p.write_bytes(b"x" * (10 + i))
        images.append(p)
    first = te.calibration_id(images)
    assert first.startswith("3:") and first == te.calibration_id(list(images))
    assert te.calibration_id(images[:2]) != first
    images[2].write_bytes(b"y" * 99)  # same names, another file
    assert te.calibration_id(images) != first
    assert te.calibration_id([]) == ""


# -- cache directory ---------------------------------------------------------------------------------
def test_cache_dir_precedence(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.delenv("FASTCELL_CACHE", raising=False)
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    assert te.cache_dir() == tmp_path / "home" / ".cache" / "fastcell" / "engines"
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert te.cache_dir() == tmp_path / "xdg" / "fastcell" / "engines"
    monkeypatch.setenv("FASTCELL_CACHE", str(tmp_path / "mine"))
    assert te.cache_dir() == tmp_path / "mine" / "engines"


# -- build, reuse, rebuild, refuse --------------------------------------------------------------------
def test_first_use_builds_then_reuses(onnx_file: Path, tmp_path: Path) -> None:
    builder = CountingBuilder()
    key = key_for(onnx_file)
    path = te.ensure_engine(onnx_file, key, builder, directory=tmp_path / "cache", name="bccd")
    assert path.is_file() and len(builder.calls) == 1
    again = te.ensure_engine(onnx_file, key, builder, directory=tmp_path / "cache", name="bccd")
    assert again == path and len(builder.calls) == 1  # cached: no second build
    assert not list(path.parent.glob(".*.tmp"))


def test_metadata_records_gpu_tensorrt_precision_and_profile(onnx_file: Path, tmp_path: Path) -> None:
    key = key_for(onnx_file, profile=te.BatchProfile(1, 8, 32))
    path = te.ensure_engine(onnx_file, key, CountingBuilder(), directory=tmp_path, metadata={"workspace_gib": 2.0})
    meta = json.loads(te.metadata_path(path).read_text())
    assert meta["format"] == te.ENGINE_FORMAT
    assert meta["tensorrt_version"] == "10.8.0.43"
    assert meta["gpu_name"] == "NVIDIA H100 80GB HBM3" and meta["compute_capability"] == "9.0"
    assert meta["precision"] == "fp16"
    assert meta["batch_profile"] == {"min": 1, "opt": 8, "max": 32}
    assert meta["workspace_gib"] == 2.0 and meta["digest"] == key.digest()
    assert meta["engine_sha256"] == te.file_sha256(path) and meta["engine_bytes"] == path.stat().st_size
    assert meta["onnx_path"] == str(onnx_file.resolve())


@pytest.mark.parametrize("other, words", [
    (A100, ["A100", "8.0", "H100", "9.0"]),
    (H100_NEWER_TRT, ["TensorRT 10.8.0.43", "10.9.0.34"]),
])
def test_foreign_engine_is_refused_with_the_reason(onnx_file: Path, tmp_path: Path, other: te.GpuTarget,
                                                   words: list[str]) -> None:
    engine = tmp_path / "model.fp16.engine"
    te.ensure_engine(onnx_file, key_for(onnx_file, target=H100), CountingBuilder(), engine_path=engine)
    builder = CountingBuilder()
    with pytest.raises(te.StaleEngineError) as info:
        te.ensure_engine(onnx_file, key_for(onnx_file, target=other), builder, engine_path=engine, on_stale="refuse")
    message = str(info.value)
    assert "refusing to load" in message and all(w in message for w in words), message
    assert builder.calls == []  # refused: nothing built, nothing loaded
    assert te.check_engine(engine, key_for(onnx_file, target=H100))  # the original is untouched


def test_stale_engine_is_rebuilt_in_place(onnx_file: Path, tmp_path: Path, caplog) -> None:
    engine = tmp_path / "model.fp16.engine"
    te.ensure_engine(onnx_file, key_for(onnx_file, target=A100), CountingBuilder(), engine_path=engine)
    builder = CountingBuilder()
    with caplog.at_level(logging.WARNING, logger="fastcell"):
        path = te.ensure_engine(onnx_file, key_for(onnx_file, target=H100), builder, engine_path=engine)
    assert path == engine and len(builder.calls) == 1 and builder.calls[0].gpu_name == H100.gpu_name
    assert "rebuilding" in caplog.text and "A100" in caplog.text
    assert json.loads(te.metadata_path(engine).read_text())["gpu_name"] == H100.gpu_name


def test_changed_onnx_is_a_changed_key(onnx_file: Path, tmp_path: Path) -> None:
    engine = tmp_path / "model.fp16.engine"
    old_key = key_for(onnx_file)
    te.ensure_engine(onnx_file, old_key, CountingBuilder(), engine_path=engine)
    onnx_file.write_bytes(b"retrained weights")
    new_key = key_for(onnx_file)
    assert new_key.onnx_sha256 != old_key.onnx_sha256
    verdict = te.check_engine(engine, new_key)
    assert not verdict and "another model.onnx" in verdict.reason


def test_cache_keeps_one_engine_per_key(onnx_file: Path, tmp_path: Path) -> None:
    builder = CountingBuilder()
    fp16 = te.ensure_engine(onnx_file, key_for(onnx_file, precision="fp16"), builder, directory=tmp_path)
    fp32 = te.ensure_engine(onnx_file, key_for(onnx_file, precision="fp32"), builder, directory=tmp_path)
    assert fp16 != fp32 and fp16.is_file() and fp32.is_file() and len(builder.calls) == 2
    assert te.check_engine(fp16, key_for(onnx_file, precision="fp16"))


def test_tampered_or_truncated_engine_is_stale(onnx_file: Path, tmp_path: Path) -> None:
    key = key_for(onnx_file)
    path = te.ensure_engine(onnx_file, key, CountingBuilder(), directory=tmp_path)
    path.write_bytes(path.read_bytes()[:5])
    verdict = te.check_engine(path, key)
    assert not verdict and "sha256" in verdict.reason
    builder = CountingBuilder()
    assert te.ensure_engine(onnx_file, key, builder, directory=tmp_path) == path and len(builder.calls) == 1


@pytest.mark.parametrize("damage", ["delete", "garbage", "old-format"])
def test_engine_without_valid_metadata_is_never_loaded(onnx_file: Path, tmp_path: Path, damage: str) -> None:
    key = key_for(onnx_file)
    path = te.ensure_engine(onnx_file, key, CountingBuilder(), directory=tmp_path)
    meta = te.metadata_path(path)
    if damage == "delete":
        meta.unlink()
    elif damage == "garbage":
        meta.write_text("{not json")
    else:
        meta.write_text(json.dumps(json.loads(meta.read_text()) | {"format": "fastcell-engine/0"}))
    verdict = te.check_engine(path, key)
    assert not verdict and verdict.reason
    with pytest.raises(te.StaleEngineError):
        te.ensure_engine(onnx_file, key, CountingBuilder(), engine_path=path, on_stale="refuse")


def test_failed_build_leaves_nothing_behind(onnx_file: Path, tmp_path: Path) -> None:
    def broken(onnx: Path, out: Path, key: te.EngineKey) -> None:
        out.write_bytes(b"half an engine")
        raise RuntimeError("TensorRT ran out of memory")

    key = key_for(onnx_file)
    cache = tmp_path / "cache"
    with pytest.raises(RuntimeError, match="out of memory"):
        te.ensure_engine(onnx_file, key, broken, directory=cache)
    assert [p.name for p in cache.iterdir() if not p.name.endswith(".lock")] == []


def test_builder_that_writes_nothing_is_an_error(onnx_file: Path, tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        te.ensure_engine(onnx_file, key_for(onnx_file), lambda onnx, out, key: None, directory=tmp_path)


def test_on_stale_must_be_known(onnx_file: Path, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="on_stale"):
        te.ensure_engine(onnx_file, key_for(onnx_file), CountingBuilder(), directory=tmp_path, on_stale="load")


# -- without TensorRT -----------------------------------------------------------------------------------
@pytest.mark.skipif(importlib.util.find_spec("tensorrt") is not None, reason="tensorrt is installed here")
def test_missing_tensorrt_says_which_extra_to_install() -> None:
    from fastcell.runtime.tensorrt_backend import TensorRTBackend
    from fastcell.spec import ModelSpec

    import numpy as np

    spec = ModelSpec(classes=("cell",), anchors=np.ones((6, 2), np.float32))
    with pytest.raises(ImportError, match=r'pip install "fastcell\[tensorrt\]"'):
        TensorRTBackend(spec)
    with pytest.raises(ImportError, match=r'pip install "fastcell\[tensorrt\]"'):
        te.current_target()


@pytest.mark.skipif(importlib.util.find_spec("tensorrt") is not None, reason="tensorrt is installed here")
@pytest.mark.parametrize("device", ["tensorrt"])  # "cuda" and "gpu" mean the torch-CUDA backend without it
def test_gpu_device_names_without_tensorrt_say_which_extra(device: str) -> None:
    import numpy as np

    from fastcell.runtime import open_backend
    from fastcell.spec import ModelSpec

    spec = ModelSpec(classes=("cell",), anchors=np.ones((6, 2), np.float32))
    with pytest.raises(ImportError, match=r'the tensorrt backend needs .*pip install "fastcell\[tensorrt\]"'):
        open_backend(spec, device)


def test_tensorrt_is_offered_only_with_a_gpu(monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib.util as iu

    import fastcell.runtime as runtime
    from fastcell.runtime import _cuda

    real_find_spec = iu.find_spec
    monkeypatch.setattr(iu, "find_spec", lambda name, *a: object() if name == "tensorrt" else real_find_spec(name, *a))
    monkeypatch.setattr(_cuda, "device_count", lambda: 0)
    assert "tensorrt" not in runtime.available_backends()
    monkeypatch.setattr(_cuda, "device_count", lambda: 1)
    assert "tensorrt" in runtime.available_backends()
    assert runtime.AUTO_ORDER[0] == "tensorrt"


@pytest.mark.skipif(importlib.util.find_spec("tensorrt") is not None, reason="tensorrt is installed here")
def test_export_format_engine_without_tensorrt_says_which_extra(tmp_path: Path) -> None:
    import argparse

    import numpy as np

    from fastcell.cli import export as export_cli
    from fastcell.spec import ModelSpec

    model = tmp_path / "model"
    model.mkdir()
    (model / "model.onnx").write_bytes(b"onnx bytes")
    ModelSpec(classes=("cell",), anchors=np.ones((6, 2), np.float32), name="m").save(model / "model.json")
    parser = argparse.ArgumentParser()
    export_cli.add_arguments(parser)
    args = parser.parse_args([str(model), "--out", str(model), "--format", "engine", "--batch-max", "16"])
    assert (args.precision, args.batch_opt, args.batch_max) == ("fp16", 8, 16)
    with pytest.raises(ImportError, match=r'pip install "fastcell\[tensorrt\]"'):
        export_cli.run(args)


def test_calibration_images_from_folders_and_files(tmp_path: Path) -> None:
    for name in ("b.png", "a.JPG", "notes.txt", "sub/c.tif"):
        (tmp_path / name).parent.mkdir(exist_ok=True)
        (tmp_path / name).write_bytes(b"x")
    found = calibration_images([tmp_path])
    assert [p.name for p in found] == ["a.JPG", "b.png", "c.tif"]
    assert calibration_images([tmp_path], limit=2) == found[:2]
    assert calibration_images([tmp_path / "b.png"]) == [tmp_path / "b.png"]
    with pytest.raises(FileNotFoundError, match="neither an image nor a folder"):
        calibration_images([tmp_path / "missing"])


def test_export_format_engine_from_a_checkpoint_leaves_calibration_to_the_engine(tmp_path: Path, monkeypatch) -> None:
    """``--calib`` with ``--format engine`` calibrates the engine: the ONNX step before it must not
    also quantise a CPU int8 model on those images."""
    import argparse

    from fastcell.cli import export as export_cli

    calls = []

    class Stop(Exception):
        pass

    def onnx_step(args, calib):
        calls.append((args.format, calib))
        raise Stop  # stop here: what reached the ONNX export is the point

    monkeypatch.setattr(export_cli, "_export_onnx", onnx_step)
    parser = argparse.ArgumentParser()
    export_cli.add_arguments(parser)
    args = parser.parse_args([str(tmp_path / "last.pt"), "--out", str(tmp_path / "m"), "--format", "engine",
                              "--precision", "int8", "--calib", str(tmp_path)])
    with pytest.raises(Stop):
        export_cli.run(args)
    assert calls == [("engine", False)]
    assert args.calib == [str(tmp_path)] and args.format == "engine"  # the caller's arguments are untouched


def test_export_help_says_a_model_is_accepted_with_format_engine() -> None:
    import argparse

    from fastcell.cli import export as export_cli

    parser = argparse.ArgumentParser()
    export_cli.add_arguments(parser)
    (checkpoint,) = [a for a in parser._actions if a.dest == "checkpoint"]
    assert "best.pt" in checkpoint.help and "--format engine" in checkpoint.help and "model folder" in checkpoint.help
