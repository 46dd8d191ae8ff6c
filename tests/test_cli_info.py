"""``fastcell --version`` and ``fastcell info``: what a user (or a bug report) sees first."""

from __future__ import annotations

import importlib.metadata
import json

from fastcell.cli import main


def test_version_is_the_installed_distributions(capsys):
    assert main(["--version"]) == 0
    assert capsys.readouterr().out.strip() == f"fastcell {importlib.metadata.version('fastcell')}"
    assert main(["-V"]) == 0
    assert capsys.readouterr().out.strip() == f"fastcell {importlib.metadata.version('fastcell')}"


def test_info_names_the_backends_their_precisions_and_the_default_model(capsys, default_model_json):
    import onnxruntime  # noqa: F401 - a hard dependency: always listed

    assert main(["info", "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    spec = json.loads(default_model_json.read_text())
    assert info["default model"] == f"{spec['name']} ({default_model_json})"
    # the shipped model has a calibrated int8 file, so ONNX Runtime runs it in both precisions
    assert (default_model_json.parent / spec["int8"]["file"]).is_file()
    assert info["backend.onnxruntime"] == "fp32, int8"
    assert main(["info"]) == 0
    text = capsys.readouterr().out
    assert "backend.onnxruntime" in text and "default model" in text
