"""cell_size: frames rescaled so cells match the training scale, results mapped back to frame pixels."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from fastcell.preprocess import Preprocessor
from fastcell.scale import canvas_params, input_scale, needs_rescale, place_on_canvas
from fastcell.spec import ModelSpec, check_cell_size

BCCD = Path(__file__).parent / "data" / "bccd"


def test_input_scale_only_ever_shrinks_below_the_letterbox():
    # 640×480 frame, letterbox scale 0.65; cells of 100 px → 66 px at 0.66: not smaller, plain letterbox
    assert input_scale(640, 480, 416, 100.0, 66.0) is None
    # 120×120 single-cell frame (letterbox ×3.47) with an 80 px cell: 66 / 80 = 0.825
    assert input_scale(120, 120, 416, 80.0, 66.0) == pytest.approx(0.825)


@pytest.mark.parametrize("shape", [(120, 120, 3), (90, 200), (150, 100, 4)])
def test_rescaled_frames_map_back_to_frame_pixels(shape):
    frame = np.zeros(shape, np.uint8)
    frame[30:60, 40:70] = 255  # a white square at x 40..70, y 30..60
    pre = Preprocessor(416, 114, 2)
    batch, params = pre([frame], cell_sizes=[40.0], train_cell_size=50.0)
    scale, pad_x, pad_y, width, height = params[0]
    assert (width, height) == (shape[1], shape[0])
    assert scale == pytest.approx(50.0 / 40.0, rel=0.02)  # the requested scale, not the letterbox's ×2+
    white = batch[0, 0] > 0.9
    ys, xs = np.nonzero(white)
    # the square's corners in input pixels, mapped back with the params as post-processing does
    x1, x2 = (xs.min() - pad_x) / scale, (xs.max() + 1 - pad_x) / scale
    y1, y2 = (ys.min() - pad_y) / scale, (ys.max() + 1 - pad_y) / scale
    assert np.allclose([x1, y1, x2, y2], [40, 30, 70, 60], atol=1.0)
    # the rest of the input is the frame's black or the grey canvas
    assert np.isclose(batch[0, 0, 0, 0], 114 / 255, atol=1e-3)


def test_canvas_params_shift_by_the_frame_offset():
    canvas, x0, y0 = place_on_canvas(np.zeros((10, 20, 3), np.uint8), 2.0, 416, 114)
    assert canvas.shape[:2] == (208, 208) and (x0, y0) == (94, 99)
    out = canvas_params(np.array([2.0, 0, 0, 208, 208], np.float32), x0, y0, 20, 10)
    assert out.tolist() == [2.0, 188.0, 198.0, 20.0, 10.0]


def test_auto_rule():
    train = 66.0
    # 120×120 frame letterboxed ×3.47: a confident 80 px cell is 277 input px → run again at 80
    assert needs_rescale(np.array([[20, 20, 100, 100]]), np.array([0.9]), (3.47, 0, 0, 120, 120), train, 416) == 80
    # a BCCD field: 100 px cells at ×0.65 are 65 input px → fine as it is
    assert needs_rescale(np.array([[0, 0, 100, 100]]), np.array([0.9]), (0.65, 0, 0, 640, 480), train, 416) is None
    # nothing found: try one cell filling 60 % of the short side
    assert needs_rescale(np.zeros((0, 4)), np.zeros(0), (3.47, 0, 0, 120, 120), train, 416) == pytest.approx(72)
    # only unconfident cells: no second look
    assert needs_rescale(np.array([[20, 20, 100, 100]]), np.array([0.3]), (3.47, 0, 0, 120, 120), train, 416) is None


def test_cell_size_setting_is_checked_and_read_from_model_json(tmp_path):
    assert check_cell_size(None) is None and check_cell_size("auto") == "auto" and check_cell_size(30) == 30.0
    for bad in (0, -1, float("nan"), float("inf")):
        with pytest.raises(ValueError):
            check_cell_size(bad)
    for bad in ("big", True, [3]):
        with pytest.raises(TypeError):
            check_cell_size(bad)
    spec = ModelSpec(classes=("cell",), anchors=np.ones((6, 2), np.float32), cell_size="auto", train_cell_size=50.0)
    back = ModelSpec.load(spec.save(tmp_path / "model.json"))
    assert back.cell_size == "auto" and back.train_cell_size == 50.0


def test_auto_leaves_smears_alone_and_rescales_a_frame_filled_by_one_cell():
    import fastcell

    annotator = fastcell.load(verbose=False)
    smear = cv2.imread(str(BCCD / "BloodImage_00007.jpg"))
    plain = annotator.with_options(cell_size=None)(smear)
    auto = annotator.with_options(cell_size="auto")(smear)
    assert auto.cell_size is None and np.array_equal(plain.boxes, auto.boxes)
    # BloodImage_00007's white cell cut out with a small margin: an analyser-like single-cell frame
    from conftest import voc_objects

    boxes, names = voc_objects(BCCD / "BloodImage_00007.xml")
    wbc = boxes[names.index("WBC")]
    x1, y1, x2, y2 = wbc.astype(int)
    m = int(0.15 * (x2 - x1))
    crop = np.ascontiguousarray(smear[max(y1 - m, 0):y2 + m, max(x1 - m, 0):x2 + m])
    result = annotator.with_options(cell_size="auto")(crop)
    assert result.cell_size is not None  # ran again at the cell's own scale
    assert result.input_scale < min(416 / crop.shape[1], 416 / crop.shape[0])
    truth = wbc - np.array([max(x1 - m, 0), max(y1 - m, 0)] * 2)
    best = result.boxes[np.argmax(result.scores)]
    lt, rb = np.maximum(best[:2], truth[:2]), np.minimum(best[2:], truth[2:])
    inter = np.prod(np.clip(rb - lt, 0, None))
    iou = inter / (np.prod(best[2:] - best[:2]) + np.prod(truth[2:] - truth[:2]) - inter)
    assert iou > 0.6


def test_stream_rescales_like_the_annotator():
    import fastcell

    annotator = fastcell.load(verbose=False)
    frames = [cv2.imread(str(BCCD / "BloodImage_00007.jpg"))[100:260, 150:320] for _ in range(3)]
    expected = [annotator.with_options(cell_size="auto")(f) for f in frames]
    with fastcell.stream(frames, annotator, cell_size="auto", batch_size=2) as stream:
        got = list(stream)
    assert [r.cell_size for r in got] == [r.cell_size for r in expected]
    for a, b in zip(got, expected):
        assert np.array_equal(a.boxes, b.boxes) and np.array_equal(a.labels, b.labels)

