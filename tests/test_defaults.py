"""Each default of a setting is written once, in ``fastcell/defaults.py``: a grep finds it there only.

Python tokens are compared (numbers and strings, not comments or docstrings), so "416×416" in a
docstring is prose and ``size: int = 416`` is a second definition.
"""

from __future__ import annotations

import io
import tokenize
from pathlib import Path

import pytest

from fastcell import defaults

PACKAGE = Path(__file__).resolve().parents[1] / "fastcell"
HOME = PACKAGE / "defaults.py"

#: files that may hold a literal for a reason other than defining the setting
ELSEWHERE = {
    # COCO's "images" list and the "images/" folders of YOLO, wbc-seg and the training sources:
    # data formats, not the ONNX input
    ('"images"', "data/"), ('"images"', "io/writers/_folder.py"), ('"images"', "evaluation/report.py"),
    ('"images"', "evaluation/segmentation.py"),
}


def _allowed(literal: str, file: str) -> bool:
    return any(lit == literal and (file == where or (where.endswith("/") and file.startswith(where)))
               for lit, where in ELSEWHERE)


def _literals(path: Path) -> set[str]:
    tokens = tokenize.generate_tokens(io.StringIO(path.read_text()).readline)
    return {t.string for t in tokens if t.type in (tokenize.NUMBER, tokenize.STRING)}


FILES = {path.relative_to(PACKAGE).as_posix(): _literals(path)
         for path in sorted([*PACKAGE.rglob("*.py"), *PACKAGE.rglob("*.pyi")])}


@pytest.mark.parametrize("name, literals", [
    ("SCORE", ("0.25",)),
    ("INPUT_SIZE", ("416", "416.0")),
    ("PAD_VALUE", ("114", "114.0")),
    ("INPUT_NAME", ('"images"', "'images'")),
    ("JPEG_EXTENSIONS", ('".jpeg"', "'.jpeg'", '".jpe"')),
    ("IMAGE_EXTENSIONS", ('".tiff"', "'.tiff'", '".bmp"', "'.bmp'", '".webp"')),
])
def test_each_default_is_written_once(name, literals):
    getattr(defaults, name)  # the one definition exists
    found = sorted(f for f, present in FILES.items() for lit in literals
                   if lit in present and f != "defaults.py" and not _allowed(lit, f))
    assert not found, f"{name} ({' / '.join(literals)}) is written again in {found}; import fastcell.defaults.{name}"
    assert any(lit in FILES["defaults.py"] for lit in literals)


def test_the_spec_takes_its_defaults_from_there():
    from fastcell.spec import ModelSpec, Thresholds

    spec = ModelSpec.from_dict({"format": "fastcell-model/1", "classes": ["cell"], "anchors": [[1, 1]] * 6,
                                "heads": [{"output": "p5", "stride": 32, "anchors": [3, 4, 5]}]})
    assert (spec.input_size, spec.pad_value, spec.model_file) == (defaults.INPUT_SIZE, defaults.PAD_VALUE,
                                                                  defaults.MODEL_FILE)
    assert Thresholds().score == defaults.SCORE and Thresholds().max_detections == defaults.MAX_DETECTIONS


def test_old_model_json_keys_are_still_read():
    """engines/bccd/model.json (shipped) writes class_agnostic_nms; it is read as class_agnostic."""
    import json

    from fastcell.spec import ModelSpec, find_model

    path = find_model("bccd")
    raw = json.loads(path.read_text())
    assert "class_agnostic_nms" in raw["thresholds"]  # the shipped file still uses the old name
    spec = ModelSpec.load(path)
    assert spec.thresholds.class_agnostic is raw["thresholds"]["class_agnostic_nms"]
    for flag in (True, False):
        raw["thresholds"]["class_agnostic_nms"] = flag
        assert ModelSpec.from_dict(raw).thresholds.class_agnostic is flag
    assert ModelSpec.from_dict(spec.to_dict()).thresholds == spec.thresholds  # and written under the new name
    assert "class_agnostic" in spec.to_dict()["thresholds"]
    assert spec.int8_path == path.parent / raw["int8"]["file"]
