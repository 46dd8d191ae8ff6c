"""The import graph of ``fastcell``: no loop, and no import from a lower layer to a higher one.

Every ``import`` in every module counts, also those inside functions (a lazy import is still a
dependency). A module belongs to the layer of the longest prefix below that names it; it may import
modules of its own layer or lower ones. The order is the data flow of the README: frame rules and
settings at the bottom, then the kernels, the stages, export (which the TensorRT backend asks for
engines), the backends, the Annotator, the stream, the torch-side tools and last the entry points.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "fastcell"

#: lowest first: (name, module prefixes)
LAYERS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("base", ("fastcell._version", "fastcell._core", "fastcell._core_loader", "fastcell.defaults",
              "fastcell.reference", "fastcell.scale", "fastcell._parallel")),
    ("description", ("fastcell.spec", "fastcell.frames", "fastcell.results")),
    ("runtime support", ("fastcell.runtime._base", "fastcell.runtime._cuda")),
    ("kernels", ("fastcell.ops",)),
    ("stages", ("fastcell.io", "fastcell.preprocess", "fastcell.postprocess", "fastcell.stats", "fastcell.model",
                "fastcell.data")),
    ("export", ("fastcell.export",)),
    ("backends", ("fastcell.runtime",)),
    ("annotator", ("fastcell.annotator",)),
    ("stream", ("fastcell.pipeline", "fastcell._stream_threads")),
    ("tools", ("fastcell.evaluation", "fastcell.train")),
    ("entry points", ("fastcell", "fastcell.__main__", "fastcell._info", "fastcell.cli", "fastcell.examples")),
)
#: layers whose parts are siblings: none imports another (each takes what it shares from below,
#: e.g. the frame rules from fastcell.frames, not from fastcell.preprocess)
SIBLINGS = ("stages",)
#: import edges known to close a loop, each with its reason; the loop test ignores only these
KNOWN_LOOP_EDGES: set[tuple[str, str]] = set()
#: compiled modules (no .py file)
EXTENSIONS = ("fastcell._core",)


def _modules() -> dict[str, Path]:
    found = {}
    for path in PACKAGE.rglob("*.py"):
        parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        found[".".join(parts)] = path
    return found


MODULES = _modules()


def _owner(name: str) -> str | None:
    """The fastcell module an imported name lives in (``fastcell.ops.letterbox`` → ``fastcell.ops``)."""
    while name:
        if name in MODULES or name in EXTENSIONS:
            return name
        name = name.rpartition(".")[0]
    return None


def imports(module: str) -> set[str]:
    """The fastcell modules ``module`` imports, anywhere in its file."""
    path = MODULES[module]
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: from the package up level - 1 steps
                parent = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join(parent + ([base] if base else []))
            # "from fastcell import ops" imports the module fastcell.ops, "from x import name" x
            names = [f"{base}.{a.name}" if _owner(f"{base}.{a.name}") == f"{base}.{a.name}" else base
                     for a in node.names]
        else:
            continue
        found |= {owner for n in names if n.startswith("fastcell") and (owner := _owner(n))}
    found.discard(module)
    return found


def place(module: str) -> tuple[int, str]:
    """The layer index of ``module`` and the prefix that puts it there (the longest that matches)."""
    best = None
    for i, (_, prefixes) in enumerate(LAYERS):
        for prefix in prefixes:
            if (module == prefix or module.startswith(prefix + ".")) and (best is None or len(prefix) > len(best[1])):
                best = (i, prefix)
    if best is None:
        raise AssertionError(f"{module} is in no layer: add it to LAYERS in {__file__}")
    return best


def layer(module: str) -> int:
    return place(module)[0]


GRAPH = {m: imports(m) for m in MODULES}


def test_the_walk_sees_known_imports():
    """The walker itself: absolute, 'from package import module' and function-level imports."""
    assert "fastcell.frames" in GRAPH["fastcell.preprocess"]
    assert "fastcell.ops" in GRAPH["fastcell.postprocess"]  # imported inside a method
    assert "fastcell.runtime.torch_backend" in GRAPH["fastcell.evaluation.predict"]
    assert "fastcell._core" in GRAPH["fastcell._core_loader"]


@pytest.mark.parametrize("module", sorted(MODULES))
def test_no_import_goes_up_a_layer_or_across_stages(module):
    mine = layer(module)
    upward = sorted(f"{other} ({LAYERS[layer(other)][0]})" for other in GRAPH[module] if layer(other) > mine)
    assert not upward, f"{module} ({LAYERS[mine][0]}) imports from higher layers: {upward}"
    if LAYERS[mine][0] in SIBLINGS:
        part = place(module)[1]
        across = sorted(other for other in GRAPH[module] if layer(other) == mine and place(other)[1] != part)
        assert not across, f"{module} imports its sibling stage(s) {across}: share through a lower layer instead"


def test_the_import_graph_has_no_loop():
    assert all(b in GRAPH[a] for a, b in KNOWN_LOOP_EDGES), "a known loop edge is gone: drop it from KNOWN_LOOP_EDGES"
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(module: str) -> None:
        state[module] = 1
        path.append(module)
        for other in sorted(GRAPH.get(module, set()) - {b for a, b in KNOWN_LOOP_EDGES if a == module}):
            if state.get(other) == 1:
                loop = path[path.index(other):] + [other]
                raise AssertionError("import loop: " + " -> ".join(loop))
            if other not in state:
                visit(other)
        path.pop()
        state[module] = 2

    for module in sorted(GRAPH):
        if module not in state:
            visit(module)


_IMPORT_ALONE = """
import importlib, os, sys, traceback

def child(name):  # a process that has imported nothing of fastcell: this module is the first
    try:
        importlib.import_module(name)
    except ModuleNotFoundError as err:  # an optional dependency that is not installed here
        os._exit(0 if err.name and not err.name.startswith("fastcell") else 1)
    except BaseException:
        traceback.print_exc()
        os._exit(1)
    os._exit(0)

running, failed = {}, []
for name in sys.argv[1:] + [None] * 3:
    if name is not None:
        pid = os.fork()
        if pid == 0:
            child(name)
        running[pid] = name
    while running and (name is None or len(running) >= 3):  # three at a time
        pid, status = os.wait()
        if status != 0:
            failed.append(running[pid])
        del running[pid]
        if name is None:
            break
print(" ".join(sorted(failed)))
"""


@pytest.mark.slow
@pytest.mark.skipif(not hasattr(__import__("os"), "fork"), reason="needs os.fork")
def test_every_module_imports_first_and_alone():
    """What the static walk cannot see: importing ``a.b.c`` first runs ``a/b/__init__.py``, so a
    package that imports back into the module being imported fails only for some import orders.
    Each module is imported first, in a fresh process."""
    import subprocess
    import sys

    modules = sorted(m for m in MODULES if not m.endswith("__main__"))  # those run the command line
    done = subprocess.run([sys.executable, "-c", _IMPORT_ALONE, *modules], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == [], f"fail when imported first: {done.stdout.split()}\n{done.stderr[-3000:]}"
