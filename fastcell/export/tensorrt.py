"""TensorRT engines: build them from the shipped ONNX on the target GPU, cache them, never load a foreign one.

A serialized TensorRT engine runs only on the GPU model (compute capability) and the TensorRT
version that built it. So fastcell ships ``model.onnx`` and builds the engine on first use, in a
user cache directory, under a name derived from an :class:`EngineKey`: a hash of the ONNX file's
sha256, the GPU name and compute capability, the TensorRT version, the precision, the batch profile
and (int8) the calibration images. A metadata JSON beside each engine records that key and the
engine's own sha256; :func:`check_engine` compares both with what is asked for now and says why an
engine does not fit. :func:`ensure_engine` then rebuilds (``on_stale="rebuild"``) or refuses with
that reason (``on_stale="refuse"``); a stale or foreign engine is never deserialized.

Cache directory: ``$FASTCELL_CACHE/engines`` when ``FASTCELL_CACHE`` is set, else
``$XDG_CACHE_HOME/fastcell/engines``, else ``~/.cache/fastcell/engines``.

Everything up to :func:`ensure_engine` is plain Python (testable without TensorRT or a GPU); only
:func:`build_engine`, :func:`current_target` and the int8 calibrator import ``tensorrt``.
TensorRT 10.x is supported: 11.x removed the fp16/int8 builder flags and the implicit-quantization
calibrators this module uses (see ``pyproject.toml``'s ``tensorrt`` extra).
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import logging
import os
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fastcell.defaults import INPUT_NAME
from fastcell.runtime._base import PRECISIONS as _PRECISIONS
from fastcell.runtime._base import require
from fastcell.spec import ModelSpec

__all__ = ["ENGINE_FORMAT", "PRECISIONS", "BatchProfile", "GpuTarget", "EngineKey", "EngineCheck",
           "StaleEngineError", "cache_dir", "file_sha256", "engine_key", "engine_path_for", "metadata_path",
           "check_engine", "write_metadata", "ensure_engine", "build_engine", "current_target",
           "calibration_id", "make_calibrator", "spec_engine", "export_engine", "require_tensorrt"]

log = logging.getLogger("fastcell")

ENGINE_FORMAT = "fastcell-engine/1"
PRECISIONS = _PRECISIONS["tensorrt"]  # fp16 first: the default


# -- what an engine is built for -------------------------------------------------------------------
@dataclass(frozen=True)
class BatchProfile:
    """TensorRT optimisation profile of the batch axis: ``min <= opt <= max`` images per call."""

    min: int = 1
    opt: int = 8
    max: int = 32

    def __post_init__(self) -> None:
        if not (isinstance(self.min, int) and isinstance(self.opt, int) and isinstance(self.max, int)):
            raise TypeError(f"batch profile sizes must be ints, got {self.min!r}/{self.opt!r}/{self.max!r}")
        if not 1 <= self.min <= self.opt <= self.max:
            raise ValueError(f"batch profile must satisfy 1 <= min <= opt <= max, got min={self.min}, "
                             f"opt={self.opt}, max={self.max}")

    def __str__(self) -> str:
        return f"{self.min}/{self.opt}/{self.max}"


@dataclass(frozen=True)
class GpuTarget:
    """The GPU and TensorRT an engine is for (from :func:`current_target` on a GPU machine)."""

    gpu_name: str
    compute_capability: str  # "9.0"
    tensorrt_version: str


@dataclass(frozen=True)
class EngineKey:
    """Everything that makes two engines interchangeable; its :meth:`digest` names the cache file."""

    onnx_sha256: str
    gpu_name: str
    compute_capability: str
    tensorrt_version: str
    precision: str
    batch_min: int
    batch_opt: int
    batch_max: int
    input_size: int
    calibration: str = ""  # int8: calibration_id() of the images; "" otherwise

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def digest(self) -> str:
        """First 20 hex digits of the sha256 of the key's canonical JSON."""
        canonical = json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode()).hexdigest()[:20]

    @property
    def profile(self) -> BatchProfile:
        return BatchProfile(self.batch_min, self.batch_opt, self.batch_max)


class StaleEngineError(RuntimeError):
    """An engine exists but was built for another GPU, TensorRT, model, precision or profile."""


_SHA_CACHE: dict[tuple[str, int, int], str] = {}


def file_sha256(path: str | Path) -> str:
    """sha256 of a file (memoised per path, size and modification time)."""
    path = Path(path)
    stat = path.stat()
    memo = (str(path.resolve()), stat.st_size, stat.st_mtime_ns)
    if memo not in _SHA_CACHE:
        digest = hashlib.sha256()
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
        _SHA_CACHE[memo] = digest.hexdigest()
    return _SHA_CACHE[memo]


def calibration_id(images: Sequence[str | Path]) -> str:
    """Identity of an int8 calibration set: a hash of the images' names, sizes and contents' order."""
    if not images:
        return ""
    digest = hashlib.sha256()
    for p in images:
        p = Path(p)
        digest.update(f"{p.name}:{p.stat().st_size}\n".encode())
    return f"{len(images)}:{digest.hexdigest()[:16]}"


def engine_key(onnx_path: str | Path, target: GpuTarget, precision: str, profile: BatchProfile,
               input_size: int, calibration: str = "") -> EngineKey:
    """The key of the engine for ``onnx_path`` on ``target``."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    if precision == "int8" and not calibration:
        raise ValueError("an int8 engine needs calibration images (real frames of the target microscope)")
    return EngineKey(file_sha256(onnx_path), target.gpu_name, target.compute_capability, target.tensorrt_version,
                     precision, profile.min, profile.opt, profile.max, int(input_size),
                     calibration if precision == "int8" else "")


# -- the cache --------------------------------------------------------------------------------------
def cache_dir() -> Path:
    """Where engines are cached (see the module docstring); not created here."""
    if os.environ.get("FASTCELL_CACHE"):
        return Path(os.environ["FASTCELL_CACHE"]).expanduser() / "engines"
    xdg = os.environ.get("XDG_CACHE_HOME")
    root = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return root / "fastcell" / "engines"


def engine_path_for(key: EngineKey, directory: str | Path, name: str = "model") -> Path:
    """``<dir>/<name>-<precision>-b<max>-<digest>.engine``: readable, and unique per key."""
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in name) or "model"
    return Path(directory) / f"{safe}-{key.precision}-b{key.batch_max}-{key.digest()}.engine"


def metadata_path(engine_path: str | Path) -> Path:
    """The metadata JSON beside an engine: ``x.engine`` → ``x.json``."""
    return Path(engine_path).with_suffix(".json")


@dataclass(frozen=True)
class EngineCheck:
    """Whether an engine file may be loaded for a key, and if not, why."""

    usable: bool
    reason: str  # "" when usable

    def __bool__(self) -> bool:
        return self.usable


def _differences(recorded: dict[str, Any], wanted: EngineKey) -> list[str]:
    """Human-readable differences between a recorded key and the wanted one, most telling first."""
    w = wanted.to_dict()
    out = []
    if (recorded.get("gpu_name"), recorded.get("compute_capability")) != (w["gpu_name"], w["compute_capability"]):
        out.append(f"it was built for GPU {recorded.get('gpu_name')!r} (compute capability "
                   f"{recorded.get('compute_capability')}), this is {w['gpu_name']!r} ({w['compute_capability']})")
    if recorded.get("tensorrt_version") != w["tensorrt_version"]:
        out.append(f"it was built with TensorRT {recorded.get('tensorrt_version')}, this is {w['tensorrt_version']}")
    if recorded.get("onnx_sha256") != w["onnx_sha256"]:
        out.append(f"it was built from another model.onnx (sha256 {str(recorded.get('onnx_sha256'))[:12]}…, "
                   f"the model now is {w['onnx_sha256'][:12]}…)")
    if recorded.get("precision") != w["precision"]:
        out.append(f"its precision is {recorded.get('precision')}, {w['precision']} was asked for")
    profile = tuple(recorded.get(k) for k in ("batch_min", "batch_opt", "batch_max"))
    if profile != (w["batch_min"], w["batch_opt"], w["batch_max"]):
        out.append("its batch profile is {}/{}/{}, {}/{}/{} was asked for".format(
            *profile, w["batch_min"], w["batch_opt"], w["batch_max"]))
    if recorded.get("input_size") != w["input_size"]:
        out.append(f"its input size is {recorded.get('input_size')}, the model's is {w['input_size']}")
    if recorded.get("calibration", "") != w["calibration"]:
        out.append("it was calibrated on other images")
    if not out and recorded != w:  # a field this version does not know, e.g. from a newer fastcell
        out.append(f"its key {sorted(recorded)} is not the one this fastcell writes")
    return out


def check_engine(engine_path: str | Path, key: EngineKey) -> EngineCheck:
    """May ``engine_path`` be deserialized for ``key``? Never opens the engine with TensorRT.

    An engine is usable only when its metadata JSON exists, has this module's format, records exactly
    ``key``, and records the sha256 of the engine file as it is now (a truncated or replaced file is
    stale too).
    """
    engine_path = Path(engine_path)
    meta_path = metadata_path(engine_path)
    if not engine_path.is_file():
        return EngineCheck(False, f"no engine at {engine_path}")
    if not meta_path.is_file():
        return EngineCheck(False, f"{engine_path.name} has no metadata {meta_path.name}, so what it was built "
                                  "for is unknown")
    try:
        meta = json.loads(meta_path.read_text())
    except (OSError, json.JSONDecodeError) as err:
        return EngineCheck(False, f"its metadata {meta_path} is unreadable ({err})")
    if not isinstance(meta, dict) or meta.get("format") != ENGINE_FORMAT:
        found = meta.get("format") if isinstance(meta, dict) else type(meta).__name__
        return EngineCheck(False, f"its metadata has format {found!r}, expected {ENGINE_FORMAT!r}")
    differences = _differences(meta.get("key", {}), key)
    if differences:
        return EngineCheck(False, "; ".join(differences))
    if meta.get("engine_sha256") != file_sha256(engine_path):
        return EngineCheck(False, f"{engine_path.name} does not match the sha256 its metadata records "
                                  "(truncated or replaced)")
    return EngineCheck(True, "")


def write_metadata(engine_path: str | Path, key: EngineKey, **extra: Any) -> Path:
    """Write the metadata JSON beside ``engine_path`` (atomically), after the engine itself."""
    engine_path = Path(engine_path)
    meta = {
        "format": ENGINE_FORMAT,
        "key": key.to_dict(),
        "digest": key.digest(),
        "engine_file": engine_path.name,
        "engine_sha256": file_sha256(engine_path),
        "engine_bytes": engine_path.stat().st_size,
        "tensorrt_version": key.tensorrt_version,
        "gpu_name": key.gpu_name,
        "compute_capability": key.compute_capability,
        "precision": key.precision,
        "batch_profile": {"min": key.batch_min, "opt": key.batch_opt, "max": key.batch_max},
        "input_size": key.input_size,
        "built_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        **extra,
    }
    path = metadata_path(engine_path)
    _atomic_write(path, (json.dumps(meta, indent=2, default=str) + "\n").encode())
    return path


def _atomic_write(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


@contextlib.contextmanager
def _build_lock(engine_path: Path) -> Iterator[None]:
    """One builder per engine across processes (two workers starting together build it once)."""
    lock_path = engine_path.with_suffix(".lock")
    with open(lock_path, "w") as f:
        try:
            import fcntl
        except ImportError:  # pragma: no cover - Windows: no cross-process lock, builds may repeat
            yield
            return
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


#: builder(onnx_path, engine_path, key) writes the serialized engine to engine_path
Builder = Callable[[Path, Path, EngineKey], None]


def ensure_engine(onnx_path: str | Path, key: EngineKey, builder: Builder, *, engine_path: str | Path | None = None,
                  directory: str | Path | None = None, name: str = "model", on_stale: str = "rebuild",
                  metadata: dict[str, Any] | None = None) -> Path:
    """The path of an engine that fits ``key``, building it when there is none or it is stale.

    Parameters
    ----------
    onnx_path : path
        The model the engine is built from.
    key : EngineKey
        What the engine must be (see :func:`engine_key`).
    builder : callable
        ``builder(onnx_path, engine_path, key)`` writes a serialized engine (:func:`build_engine`
        with its options bound, or a stand-in in tests).
    engine_path : path, optional
        An explicit engine file (e.g. one ``fastcell export --format engine`` wrote). Default: the
        cache file :func:`engine_path_for` names in ``directory``.
    directory : path, optional
        The cache directory (default :func:`cache_dir`).
    on_stale : {"rebuild", "refuse"}
        What to do with an engine that does not fit: rebuild it in place, or raise
        :class:`StaleEngineError` saying why.
    metadata : dict, optional
        Extra fields for the metadata JSON (workspace, model name, build options).

    Returns
    -------
    Path
        An engine that :func:`check_engine` accepts for ``key``.
    """
    if on_stale not in ("rebuild", "refuse"):
        raise ValueError(f"on_stale must be 'rebuild' or 'refuse', got {on_stale!r}")
    if engine_path is None:
        engine_path = engine_path_for(key, directory if directory is not None else cache_dir(), name)
    engine_path = Path(engine_path)
    verdict = check_engine(engine_path, key)
    if verdict:
        return engine_path
    exists = engine_path.exists()
    if exists and on_stale == "refuse":
        raise StaleEngineError(f"refusing to load {engine_path}: {verdict.reason}. Delete it, or let fastcell "
                               "rebuild it (on_stale='rebuild')")
    engine_path.parent.mkdir(parents=True, exist_ok=True)
    with _build_lock(engine_path):
        verdict = check_engine(engine_path, key)  # another process may have built it meanwhile
        if verdict:
            return engine_path
        if exists:
            log.warning("fastcell: rebuilding the TensorRT engine %s: %s", engine_path, verdict.reason)
        else:
            log.info("fastcell: building a TensorRT engine for %s on %s (%s); this takes a minute or two, "
                     "once per GPU", Path(onnx_path).name, key.gpu_name, key.precision)
        metadata_path(engine_path).unlink(missing_ok=True)  # no window where old metadata vouches
        tmp = engine_path.with_name(f".{engine_path.name}.{os.getpid()}.tmp")
        start = time.perf_counter()
        try:
            builder(Path(onnx_path), tmp, key)
            os.replace(tmp, engine_path)
        finally:
            tmp.unlink(missing_ok=True)
        write_metadata(engine_path, key, onnx_path=str(Path(onnx_path).resolve()),
                       build_seconds=round(time.perf_counter() - start, 1), **(metadata or {}))
    verdict = check_engine(engine_path, key)
    if not verdict:  # the builder wrote something else than it was asked for
        raise RuntimeError(f"the engine just built at {engine_path} does not check out: {verdict.reason}")
    return engine_path


# -- TensorRT itself (GPU machines only) --------------------------------------------------------------
def require_tensorrt() -> Any:
    """The ``tensorrt`` module, 10.x; an ImportError naming ``fastcell[tensorrt]`` when it is absent."""
    trt = require("tensorrt", "tensorrt", "building or running TensorRT engines")
    major = int(trt.__version__.split(".")[0])
    if major != 10:
        raise ImportError(f"fastcell's TensorRT path supports TensorRT 10.x, found {trt.__version__} "
                          "(11.x removed the fp16/int8 builder flags it uses): pip install \"tensorrt>=10,<11\"")
    return trt


def current_target(device: int = 0) -> GpuTarget:
    """The GPU ``device`` and the installed TensorRT, as an engine key sees them."""
    from fastcell.runtime import _cuda

    trt = require_tensorrt()
    info = _cuda.device_properties(device)
    return GpuTarget(info.name, info.compute_capability, trt.__version__)


def build_engine(onnx_path: str | Path, engine_path: str | Path, key: EngineKey, *, workspace_gib: float = 2.0,
                 pad_value: int, calibration_images: Sequence[str | Path] = (),
                 calibration_cache: str | Path | None = None, verbose: bool = False) -> None:
    """Compile ``onnx_path`` into a serialized TensorRT engine at ``engine_path``, as ``key`` says.

    fp16 lets TensorRT choose fp16 kernels (inputs and outputs stay float32); int8 adds int8
    kernels calibrated with TensorRT's entropy calibrator on ``calibration_images`` (letterboxed
    exactly as at run time; layers that lose accuracy in int8 stay fp16). The batch axis gets one
    optimisation profile ``key.batch_min/opt/max``; ``workspace_gib`` caps TensorRT's scratch memory;
    ``pad_value`` is the model's letterbox grey (``spec.pad_value``), for the calibration images.
    """
    trt = require_tensorrt()
    logger = trt.Logger(trt.Logger.VERBOSE if verbose else trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network = builder.create_network(0)  # TensorRT 10: explicit batch is the only mode
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise RuntimeError(f"TensorRT could not parse {onnx_path}: {errors}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(workspace_gib * (1 << 30)))
    size = key.input_size
    profile = builder.create_optimization_profile()
    profile.set_shape(INPUT_NAME, (key.batch_min, 3, size, size), (key.batch_opt, 3, size, size),
                      (key.batch_max, 3, size, size))
    config.add_optimization_profile(profile)
    if key.precision in ("fp16", "int8"):
        config.set_flag(trt.BuilderFlag.FP16)
    if key.precision == "int8":
        if not calibration_images:
            raise ValueError("an int8 engine needs calibration images")
        config.set_flag(trt.BuilderFlag.INT8)
        config.int8_calibrator = make_calibrator(trt, calibration_images, size, pad_value,
                                                 batch_size=min(8, key.batch_max), cache_file=calibration_cache)
        config.set_calibration_profile(profile)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise RuntimeError(f"TensorRT failed to build an engine from {onnx_path} (see its log above)")
    Path(engine_path).write_bytes(bytes(serialized))


def make_calibrator(trt: Any, images: Sequence[str | Path], size: int, pad_value: int, *, batch_size: int = 8,
                    cache_file: str | Path | None = None) -> Any:
    """A ``trt.IInt8EntropyCalibrator2`` fed by real images, read as ``fastcell annotate`` reads them
    (:func:`fastcell.io.sources.read_image`) and letterboxed by :func:`fastcell.ops.letterbox_batch`."""
    import numpy as np

    from fastcell.io.sources import read_image
    from fastcell.ops import letterbox_batch
    from fastcell.runtime import _cuda

    paths = [Path(p) for p in images]

    class _EntropyCalibrator(trt.IInt8EntropyCalibrator2):
        def __init__(self) -> None:
            trt.IInt8EntropyCalibrator2.__init__(self)
            self._next = 0
            self._host = _cuda.PinnedArray((batch_size, 3, size, size), np.float32)
            self._device = _cuda.DeviceArray(self._host.nbytes)
            self._stream = _cuda.Stream()
            try:
                from tqdm import tqdm

                self._progress = tqdm(total=len(paths), desc="int8 calibration", unit="image")
            except ImportError:  # pragma: no cover - tqdm is a dependency
                self._progress = None

        def get_batch_size(self) -> int:
            return batch_size

        def get_batch(self, names: list[str]) -> list[int] | None:
            chunk = paths[self._next:self._next + batch_size]
            if len(chunk) < batch_size:  # TensorRT needs full batches; the remainder is dropped
                if self._progress is not None:
                    self._progress.close()
                return None
            frames = []
            for p in chunk:
                try:
                    frames.append(read_image(p))
                except ValueError as err:
                    raise ValueError(f"calibration image {p}: {err}") from None
            letterbox_batch(frames, out=self._host.array, size=size, pad_value=pad_value)
            self._stream.copy_to_device(self._device.ptr, self._host.ptr, self._host.nbytes)
            self._stream.synchronize()
            self._next += batch_size
            if self._progress is not None:
                self._progress.update(len(chunk))
            return [self._device.ptr]

        def read_calibration_cache(self) -> bytes | None:
            if cache_file is not None and Path(cache_file).is_file():
                return Path(cache_file).read_bytes()
            return None

        def write_calibration_cache(self, cache: Any) -> None:
            if cache_file is not None:
                Path(cache_file).parent.mkdir(parents=True, exist_ok=True)
                _atomic_write(Path(cache_file), bytes(cache))

    if len(paths) < batch_size:
        raise ValueError(f"int8 calibration needs at least {batch_size} images, got {len(paths)}")
    return _EntropyCalibrator()


def spec_engine(spec: ModelSpec, precision: str = "fp16", profile: BatchProfile | None = None, *,
                device: int = 0, workspace_gib: float = 2.0, calibration_images: Sequence[str | Path] = (),
                engine_path: str | Path | None = None, directory: str | Path | None = None,
                on_stale: str = "rebuild") -> Path:
    """The engine of a model on this machine's GPU ``device``: cached, checked, built when needed."""
    profile = profile or BatchProfile()
    target = current_target(device)
    images = sorted(str(p) for p in calibration_images)
    key = engine_key(spec.model_path, target, precision, profile, spec.input_size, calibration_id(images))
    directory = Path(directory) if directory is not None else cache_dir()
    calib_cache = directory / f"{spec.name}-{key.onnx_sha256[:12]}-{key.calibration.replace(':', '-')}.calib"

    def builder(onnx: Path, out: Path, k: EngineKey) -> None:
        build_engine(onnx, out, k, workspace_gib=workspace_gib, calibration_images=images,
                     calibration_cache=calib_cache if images else None, pad_value=spec.pad_value)

    return ensure_engine(spec.model_path, key, builder, engine_path=engine_path, directory=directory,
                         name=spec.name, on_stale=on_stale,
                         metadata={"model": spec.name, "workspace_gib": workspace_gib,
                                   "calibration_images": len(images), "outputs": [h.output for h in spec.heads]})


def export_engine(spec: ModelSpec, precision: str = "fp16", *, out_dir: str | Path | None = None,
                  batch_opt: int = 8, batch_max: int = 32, workspace_gib: float = 2.0,
                  calibration_images: Sequence[str | Path] = (), device: int = 0) -> Path:
    """Build the engine of an exported model beside it (``model.<precision>.engine`` + its metadata JSON).

    Parameters
    ----------
    spec : ModelSpec
        The exported model (read from its ``model.json``).
    precision : {"fp16", "int8", "fp32"}
        ``"int8"`` needs ``calibration_images`` (real frames of the target microscope, at least 8).
    out_dir : path, optional
        Where the engine goes; default the model's folder.
    batch_opt, batch_max : int
        The batch profile (min 1) TensorRT optimises for and the largest batch it accepts.

    Returns
    -------
    Path
        The engine. It runs only on this GPU model with this TensorRT; elsewhere fastcell builds its
        own from ``model.onnx``.
    """
    if precision == "int8" and not calibration_images:
        raise ValueError("precision='int8' needs calibration images (real frames, at least 8)")
    out = Path(out_dir) if out_dir is not None else spec.model_path.parent
    out.mkdir(parents=True, exist_ok=True)
    engine = out / f"{spec.model_path.stem}.{precision}.engine"
    profile = BatchProfile(1, min(batch_opt, batch_max), batch_max)
    return spec_engine(spec, precision, profile, device=device, workspace_gib=workspace_gib,
                       calibration_images=calibration_images if precision == "int8" else (),
                       engine_path=engine, directory=out, on_stale="rebuild")
