"""Shared fixtures: where the real data lives, and skips with a reason when it does not."""

from __future__ import annotations

import os
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
# Real data sits beside the checkout (../shared/data); FASTCELL_DATA overrides.
DATA = Path(os.environ.get("FASTCELL_DATA", REPO.parent / "shared" / "data"))
BCCD = DATA / "bccd"
WBC_SEG = DATA / "wbc-seg"
SAMPLES = REPO / "tests" / "data"


def voc_objects(xml_path: Path) -> tuple[np.ndarray, list[str]]:
    """(K, 4) float32 boxes (xmin, ymin, xmax, ymax) and class names of a Pascal VOC file.

    Read with ElementTree, independently of ``fastcell.data``'s own reader (which is under test).
    """
    objects = list(ET.parse(xml_path).getroot().iter("object"))
    boxes = [[float(o.find("bndbox").find(k).text) for k in ("xmin", "ymin", "xmax", "ymax")] for o in objects]
    return np.asarray(boxes, np.float32).reshape(-1, 4), [o.find("name").text for o in objects]


@pytest.fixture(autouse=True)
def _cpu_path_unless_marked_gpu(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    """Tests not marked ``gpu`` see no GPU, so that ``device="auto"`` takes the CPU backends they
    are written for even on a GPU machine (where it would pick the torch-CUDA backend)."""
    if request.node.get_closest_marker("gpu") is None:
        import fastcell.runtime

        monkeypatch.setattr(fastcell.runtime, "gpu_count", lambda: 0)


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


# -- models for runtime tests ------------------------------------------------------------------------
BCCD_CLASSES = ("RBC", "WBC", "Platelets")
# area-sorted (w, h) pixel anchors of the BCCD boxes' scale at 416 input; good enough for a random model
TEST_ANCHORS = ((12, 12), (26, 27), (44, 43), (68, 66), (86, 83), (140, 125))


@pytest.fixture(scope="session")
def random_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A randomly initialised AttentionNet (3 BCCD classes) exported to ONNX + model.json + model.pt.

    Built once per session (needs torch, the ``train`` extra). Its detections are meaningless but
    deterministic, which is all that backend-agreement and pipeline tests need.
    """
    torch = pytest.importorskip("torch", reason="exporting the test model needs torch (fastcell[train])")
    import numpy as np

    from fastcell.model import AttentionNet
    from fastcell.spec import ModelSpec

    out = tmp_path_factory.mktemp("random_model")
    torch.manual_seed(0)
    model = AttentionNet(len(BCCD_CLASSES)).eval()
    with torch.no_grad():  # lift objectness from the training prior (p≈0.01) so some boxes pass 0.25
        for index in (15, 21):
            model.layers[index].bias.view(3, -1)[:, 4] = 1.0
    spec = ModelSpec(classes=BCCD_CLASSES, anchors=np.asarray(TEST_ANCHORS, np.float32), name="random-test")
    from fastcell.export import export_onnx

    export_onnx(model=model, spec=spec, out_dir=out)
    torch.save(model.state_dict(), out / "model.pt")  # for the torch backend
    return out


@pytest.fixture(scope="session")
def default_model_json() -> Path:
    """The shipped default model's metadata, or a skip when engines/DEFAULT is absent."""
    if not (REPO / "engines" / "DEFAULT").is_file():
        pytest.skip("no shipped default model yet (engines/DEFAULT is absent)")
    from fastcell.spec import find_model

    return find_model("default")
