"""What a distributed run annotates: SRC expanded to image paths (or URIs), each with its output key.

SRC is one of

* a folder, a glob or one image file — expanded exactly as single-process ``fastcell annotate``
  does (:func:`fastcell.io.plan.resolve`), so both give the same output names;
* a list file (``.txt``/``.lst``): one path or URI a line, blank lines and ``#`` comments skipped;
* a manifest (``.parquet``/``.csv``) with a ``path`` column (or a single column) of paths or URIs;
* a URI that pyarrow's file systems read (``s3://``, ``gs://``, ``abfs://``, ``hdfs://``,
  ``file://``…; the same that Ray Data's readers take): a folder, glob or image under it.

Relative paths in a list file or manifest are relative to the folder that holds it. Keys (the stems
of the output files) are paths relative to the deepest folder common to all inputs, made unique
by the same rule as in single-process mode.

Nothing here imports Ray; pyarrow is needed only for manifests and URIs.
"""

from __future__ import annotations

import logging
import os
import posixpath
import re
from pathlib import Path
from typing import Any

from fastcell.io.plan import Plan, plan_items, resolve

__all__ = ["resolve_source", "is_uri", "LIST_SUFFIXES", "MANIFEST_SUFFIXES"]

log = logging.getLogger("fastcell")

LIST_SUFFIXES = (".txt", ".lst")
MANIFEST_SUFFIXES = (".parquet", ".csv")
_MANIFEST_COLUMNS = ("path", "uri", "image", "file")


def is_uri(text: str) -> bool:
    """Whether ``text`` names a file system by scheme (``s3://…``) rather than a local path."""
    scheme, sep, _ = text.partition("://")
    return bool(sep) and scheme.isascii() and scheme.replace("+", "").replace("-", "").isalnum() and len(scheme) > 1


def resolve_source(source: str, recursive: bool = False, out: str | os.PathLike | None = None) -> Plan:
    """Expand SRC into image paths/URIs with unique output keys (see the module docstring).

    With ``out``, nothing inside the folders an annotation run writes there is read: such entries
    of a list or manifest are skipped (``Plan.skipped``, listed in ``failed.txt``).

    Raises
    ------
    FileNotFoundError
        SRC names nothing, or no images.
    ValueError
        SRC is a video (not supported by the distributed engine), or a manifest without a path
        column.
    ImportError
        A manifest or URI needs pyarrow, which is missing.
    """
    if not isinstance(source, (str, os.PathLike)):
        raise TypeError(f"source must be a path, glob or URI string, got {type(source).__name__}")
    source = os.fspath(source)
    suffix = posixpath.splitext(source.lower())[1]
    if suffix in LIST_SUFFIXES + MANIFEST_SUFFIXES and (is_uri(source) or os.path.isfile(source)):
        paths = _read_list(source) if suffix in LIST_SUFFIXES else _read_manifest(source)
        return _plan(paths, out)
    if is_uri(source):
        return _plan(_list_uri(source, recursive), out)
    plan = resolve(source, recursive, out)
    if plan.video is not None:
        raise ValueError(f"{source} is a video; the distributed engine annotates image files only "
                         "(run single-process 'fastcell annotate' on videos)")
    return plan


# -- list files and manifests ----------------------------------------------------------------------
def _read_text(source: str) -> str:
    if is_uri(source):
        fs, path = _filesystem(source)
        with fs.open_input_stream(path) as f:
            return f.read().decode("utf-8")
    return Path(source).read_text(encoding="utf-8")


def _read_list(source: str) -> list[str]:
    lines = (line.strip() for line in _read_text(source).splitlines())
    entries = [line for line in lines if line and not line.startswith("#")]
    if not entries:
        raise FileNotFoundError(f"the list file {source} names no images")
    return _absolute(entries, source)


def _read_manifest(source: str) -> list[str]:
    pa = _pyarrow()
    if source.lower().endswith(".parquet"):
        import pyarrow.parquet as pq

        fs, path = _filesystem(source) if is_uri(source) else (None, source)
        table = pq.read_table(path, filesystem=fs)
    else:
        import pyarrow.csv as pcsv

        if is_uri(source):
            fs, path = _filesystem(source)
            with fs.open_input_stream(path) as f:
                table = pcsv.read_csv(f)
        else:
            table = pcsv.read_csv(source)
    names = [n for n in _MANIFEST_COLUMNS if n in table.column_names]
    if names:
        column = table.column(names[0])
    elif table.num_columns == 1:
        column = table.column(0)
    else:
        raise ValueError(f"the manifest {source} needs a column named one of {list(_MANIFEST_COLUMNS)} "
                         f"(or a single column), got columns {table.column_names}")
    if not pa.types.is_string(column.type) and not pa.types.is_large_string(column.type):
        raise ValueError(f"the path column of {source} must hold strings, got {column.type}")
    entries = [p for p in column.to_pylist() if p]
    if not entries:
        raise FileNotFoundError(f"the manifest {source} names no images")
    return _absolute(entries, source)


def _absolute(entries: list[str], listing: str) -> list[str]:
    """Entries as absolute paths or URIs (relative ones relative to the list's folder), first
    occurrence kept when one is listed twice."""
    if is_uri(listing):
        base = listing.rsplit("/", 1)[0]
        out = [e if is_uri(e) or e.startswith("/") else f"{base}/{e}" for e in entries]
    else:
        base_dir = os.path.dirname(os.path.abspath(listing))
        out = [e if is_uri(e) else os.path.normpath(os.path.join(base_dir, e)) for e in entries]
    unique = list(dict.fromkeys(out))
    if len(unique) < len(out):
        log.warning("fastcell: %s lists %d path(s) more than once; each is annotated once",
                    listing, len(out) - len(unique))
    return unique


# -- URIs ------------------------------------------------------------------------------------------
def _pyarrow() -> Any:
    try:
        import pyarrow
    except ImportError as err:
        raise ImportError('manifests and URIs need pyarrow: pip install "fastcell[ray]"') from err
    return pyarrow


def _filesystem(uri: str) -> tuple[Any, str]:
    _pyarrow()
    from pyarrow import fs

    return fs.FileSystem.from_uri(uri)


def _list_uri(source: str, recursive: bool) -> list[str]:
    """Image URIs under a folder URI, matching a glob URI, or the one image URI."""
    from pyarrow import fs as pafs

    from fastcell.io.sources import IMAGE_EXTENSIONS

    scheme = source.split("://", 1)[0]
    has_glob = any(c in source for c in "*?[")
    if has_glob:
        # List everything under the deepest folder before the first wildcard, then match the
        # pattern as a local glob with recursive=True would: '**/' crosses folders, '*' does not.
        head = source.split("://", 1)[1]
        fixed = head[: min(head.find(c) for c in "*?[" if c in head)]
        base, deep = f"{scheme}://{fixed.rsplit('/', 1)[0]}", True
    else:
        base, deep = source.rstrip("/"), recursive
    fs, root = _filesystem(base)
    info = fs.get_file_info(root)
    if info.type == pafs.FileType.File and not has_glob:
        return [source]
    if info.type != pafs.FileType.Directory:
        raise FileNotFoundError(f"no such file, folder or pattern: {source!r}")
    infos = fs.get_file_info(pafs.FileSelector(root, recursive=deep))
    # FileInfo paths lack the scheme (and, for s3/gs, hold the bucket as first component)
    prefix = base[: len(base) - len(root)] if base.endswith(root) else f"{scheme}://"
    found = sorted(prefix + i.path for i in infos if i.type == pafs.FileType.File)
    found = [u for u in found if posixpath.splitext(u)[1].lower() in IMAGE_EXTENSIONS]
    if has_glob:
        pattern = _glob_regex(source)
        found = [u for u in found if pattern.fullmatch(u)]
    if not found:
        what = "matches no image files" if has_glob else "holds no image files"
        what += "" if deep or has_glob else " (sub-folders: --recursive)"
        raise FileNotFoundError(f"{source!r} {what}")
    return found


def _glob_regex(pattern: str) -> "re.Pattern[str]":
    """A glob as a regex, with the semantics of ``glob.glob(recursive=True)``."""
    out, i = [], 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out.append("(?:.*/)?")
            i += 3
        elif pattern.startswith("**", i):
            out.append(".*")
            i += 2
        elif pattern[i] == "*":
            out.append("[^/]*")
            i += 1
        elif pattern[i] == "?":
            out.append("[^/]")
            i += 1
        elif pattern[i] == "[" and "]" in pattern[i + 2:]:
            end = pattern.index("]", i + 2)
            body = pattern[i + 1:end]
            out.append("[" + ("^" + body[1:] if body.startswith("!") else body) + "]")
            i = end + 1
        else:
            out.append(re.escape(pattern[i]))
            i += 1
    return re.compile("".join(out))


# -- keys --------------------------------------------------------------------------------------------
def _key_path(path: str) -> str:
    """An absolute POSIX-like path for key computation: URIs become /<scheme>/<rest>."""
    if is_uri(path):
        scheme, rest = path.split("://", 1)
        return f"/{scheme}/{rest.lstrip('/')}"
    return os.path.abspath(path)


def _plan(paths: list[str], out: str | os.PathLike | None) -> Plan:
    """Keys relative to the deepest folder common to all paths, made unique as in single-process
    mode; local paths inside the run's own output folders are skipped (outputs are never inputs)."""
    from fastcell.io.writers import owned_paths

    owned = [os.path.realpath(p) for p in owned_paths(out)] if out is not None else []
    skipped = []
    if owned:
        def inside(path: str) -> bool:
            real = os.path.realpath(path)
            return any(real == o or real.startswith(o.rstrip(os.sep) + os.sep) for o in owned)

        skipped = [(p, "inside the output folders of this run: never read as input")
                   for p in paths if not is_uri(p) and inside(p)]
        paths = [p for p in paths if is_uri(p) or not inside(p)]
    if not paths:
        raise FileNotFoundError("every listed image is inside the output folders of this run")
    pseudo = [_key_path(p) for p in paths]
    root = os.path.commonpath([os.path.dirname(p) for p in pseudo])
    return Plan(paths=list(paths), items=plan_items(pseudo, root), skipped=skipped)
