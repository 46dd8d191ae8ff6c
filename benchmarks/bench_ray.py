"""``fastcell annotate --engine ray`` on a local Ray cluster beside single-process ``fastcell annotate``.

One run annotates the same images (BCCD JPEGs) in fresh output folders:

1. single process: ``fastcell annotate SRC --out DIR`` in this process, images/s of the whole call
   (model load included) and as its summary reports it (model load left out);
2. Ray: starting the local cluster (once), then ``fastcell.distributed.annotate`` with 1, 2, …
   actors (each run includes its probe, actor start-up and model loads, the merge and the Parquet
   table), reported as images/s of the whole call and in steady state (from the first results
   to the last, what a long run on a real cluster sees);

and checks that every run wrote the same ``annotations.json`` as the single-process one. On a
machine with few cores Ray cannot be faster: the numbers are its overhead. On a cluster pass
``--address`` (and ``--gpus-per-worker``) and more images.

Usage: ``python benchmarks/bench_ray.py [--images 64] [--workers 1,2] [--batch 8] [--num-cpus 2]
[--address ADDR] [--gpus-per-worker G] [--model default]``.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import re
import shutil
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
BCCD = REPO.parent / "shared" / "data" / "bccd" / "JPEGImages"
SAMPLES = REPO / "tests" / "data" / "bccd"


def images(n: int, folder: Path) -> Path:
    """``n`` BCCD JPEGs in ``folder`` (the 4 test samples repeated when the data set is absent)."""
    pool = sorted(BCCD.glob("*.jpg")) if BCCD.is_dir() else []
    if not pool:
        print(f"  ({BCCD} not found: repeating the {len(list(SAMPLES.glob('*.jpg')))} samples in tests/data)")
        pool = sorted(SAMPLES.glob("*.jpg"))
    folder.mkdir(parents=True)
    for i in range(n):
        src = pool[i % len(pool)]
        shutil.copy(src, folder / (src.name if i < len(pool) else f"r{i // len(pool)}_{src.name}"))
    return folder


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--images", type=int, default=64)
    parser.add_argument("--workers", default="1,2", help="actor counts to try, comma-separated")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--num-cpus", type=int, default=2, help="CPUs of the local cluster (without --address)")
    parser.add_argument("--address", default=None, help="join this Ray cluster instead of starting one")
    parser.add_argument("--gpus-per-worker", type=float, default=0.0)
    parser.add_argument("--model", default="default")
    parser.add_argument("--out", type=Path, default=None,
                        help="work folder (default: a temporary one); on a cluster, one all nodes mount")
    args = parser.parse_args()
    try:
        import ray
    except ImportError:
        print('bench_ray needs Ray: pip install "fastcell[ray]"', file=sys.stderr)
        return 1
    from fastcell.cli import main as cli
    from fastcell.distributed import annotate

    work = Path(tempfile.mkdtemp(prefix="bench-ray-", dir=args.out))
    try:
        src = images(args.images, work / "src")
        print(f"{args.images} images, batch {args.batch}, model {args.model!r}")
        start = time.perf_counter()
        printed = io.StringIO()
        with contextlib.redirect_stdout(printed):  # its summary's rate leaves out the model load
            assert cli(["annotate", str(src), "--out", str(work / "single"), "--model", args.model, "--batch",
                        str(args.batch)]) == 0
        single = time.perf_counter() - start
        single_rate = float(re.search(r"\(([0-9.]+) images/s\)", printed.getvalue()).group(1))
        reference = (work / "single" / "annotations.json").read_bytes()
        print(f"{'run':<34}{'wall s':>8}{'img/s':>8}{'steady img/s':>22}  same COCO")
        print(f"{'single process':<34}{single:8.2f}{args.images / single:8.1f}{single_rate:22.1f}  (reference)")

        start = time.perf_counter()
        ray.init(address=args.address, num_cpus=None if args.address else args.num_cpus, include_dashboard=False,
                 logging_level="ERROR")
        print(f"{'ray.init (cluster start/join)':<34}{time.perf_counter() - start:8.2f}")
        try:
            for n in (int(w) for w in args.workers.split(",")):
                out = work / f"ray{n}"
                rows: list[dict] = []
                start = time.perf_counter()
                summary = annotate(src, out, model=args.model, workers=n, batch_size=args.batch,
                                   gpus_per_worker=args.gpus_per_worker, progress=False,
                                   on_image=rows.append)
                done_at = sorted(float(r["time"]) for r in rows)
                wall = time.perf_counter() - start
                same = (out / "annotations.json").read_bytes() == reference
                # Steady state: images per second between the first batch written and the last, by
                # the workers' clocks (leaves out actor start-up and model loads, which a long run
                # amortises; the driver's arrival times are bunched by Ray's output buffering).
                first = sum(1 for t in done_at if t == done_at[0])
                span = done_at[-1] - done_at[0]
                steady = (len(done_at) - first) / span if span > 0 else float("nan")
                print(f"{f'ray, {n} actor(s)':<34}{wall:8.2f}{args.images / wall:8.1f}{steady:22.1f}  "
                      f"{'yes' if same else 'NO'}")
                if summary.error is not None:
                    print(f"  stopped early: {summary.error}", file=sys.stderr)
                    return 1
        finally:
            ray.shutdown()
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
