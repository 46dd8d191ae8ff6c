"""Shared fixtures: where the real data lives, and skips with a reason when it does not."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
# Real data sits beside the checkout (../shared/data); FASTCELL_DATA overrides.
DATA = Path(os.environ.get("FASTCELL_DATA", REPO.parent / "shared" / "data"))
BCCD = DATA / "bccd"
WBC_SEG = DATA / "wbc-seg"
SAMPLES = REPO / "tests" / "data"


def _need(path: Path, what: str) -> Path:
    if not path.is_dir():
        pytest.skip(f"{what} not found at {path} (set FASTCELL_DATA to the folder holding it)")
    return path


@pytest.fixture(scope="session")
def bccd_dir() -> Path:
    return _need(BCCD, "the BCCD data set")


@pytest.fixture(scope="session")
def wbc_seg_dir() -> Path:
    return _need(WBC_SEG, "the wbc-seg data set")


@pytest.fixture(scope="session")
def bccd_images(bccd_dir: Path) -> list[Path]:
    """A fixed handful of real BCCD test-split images."""
    names = (bccd_dir / "ImageSets" / "Main" / "test.txt").read_text().split()[:6]
    return [bccd_dir / "JPEGImages" / f"{n}.jpg" for n in names]
