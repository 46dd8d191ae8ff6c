"""AttentionNet: Table 1 shapes, the paper's parameter count and FLOPs, BN folding, channels_last."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

from fastcell.model.attentionnet import AttentionNet, MaxPoolSame, conv_flops, count_parameters, fold_batchnorm  # noqa: E402
from fastcell.spec import HEAD_ANCHORS  # noqa: E402


def _randomise_batchnorm(model: torch.nn.Module, seed: int = 0) -> None:
    """Give every BN non-trivial statistics so that folding has something to fold."""
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.5)
            m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
            m.weight.data.copy_(torch.randn(m.num_features, generator=g))
            m.bias.data.copy_(torch.randn(m.num_features, generator=g) * 0.1)


def test_paper_parameter_count_and_flops():
    # The paper: one class at 416×416 → 8.67 M parameters, 5.44 GFLOPs (2 × multiply-adds).
    model = AttentionNet(1, 416)
    assert round(count_parameters(model) / 1e6, 2) == 8.67
    assert round(conv_flops(model) / 1e9, 2) == 5.44


def test_flops_match_a_hand_count_of_table_1():
    # Independent count from Table 1: sum of 2·k²·Cin·Cout·H·W over the conv rows at 416.
    rows = [  # (k, cin, cout, side)
        (3, 3, 16, 416), (3, 16, 32, 208), (3, 32, 64, 104), (3, 64, 128, 52), (3, 128, 256, 26),
        (3, 256, 512, 13), (3, 512, 1024, 13), (1, 1024, 256, 13), (3, 256, 512, 13), (1, 512, 18, 13),
        (1, 256, 128, 13), (3, 384, 256, 26), (1, 256, 18, 26),
    ]
    expected = sum(2 * k * k * cin * cout * side * side for k, cin, cout, side in rows)
    assert conv_flops(AttentionNet(1)) == expected


@pytest.mark.parametrize("classes", [1, 3])
def test_output_shapes_and_order(classes):
    model = AttentionNet(classes).eval()
    with torch.no_grad():
        p5, p4 = model(torch.zeros(2, 3, 416, 416))
    width = 3 * (classes + 5)
    assert p5.shape == (2, width, 13, 13)  # stride 32 first, as the ONNX contract and HEAD_ANCHORS
    assert p4.shape == (2, width, 26, 26)
    assert model.strides == tuple(HEAD_ANCHORS)


def test_other_input_size_multiple_of_32():
    model = AttentionNet(3, 320).eval()
    with torch.no_grad():
        p5, p4 = model(torch.zeros(1, 3, 320, 320))
    assert p5.shape[-2:] == (10, 10) and p4.shape[-2:] == (20, 20)


@pytest.mark.parametrize("bad", [0, 100, -32])
def test_bad_arguments_are_refused(bad):
    with pytest.raises(ValueError):
        AttentionNet(3, input_size=bad)
    with pytest.raises(ValueError, match="num_classes"):
        AttentionNet(0)


def test_stride_one_maxpool_is_darknets():
    # Darknet pads the far side: y[i] = max(x[i], x[i+1]) with the last row/column kept.
    x = torch.randn(2, 4, 13, 13)
    reference = torch.nn.functional.max_pool2d(torch.nn.functional.pad(x, (0, 1, 0, 1), mode="replicate"), 2, 1)
    assert torch.equal(MaxPoolSame(2, 1)(x), reference)


def test_fold_batchnorm_keeps_outputs_and_leaves_input_model_alone():
    model = AttentionNet(3).eval()
    _randomise_batchnorm(model)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    folded = fold_batchnorm(model)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in folded.modules())
    x = torch.rand(2, 3, 416, 416, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        for a, b in zip(model(x), folded(x)):
            assert torch.allclose(a, b, atol=1e-4, rtol=1e-4)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_channels_last_gives_the_same_outputs():
    model = AttentionNet(3).eval()
    _randomise_batchnorm(model, 3)
    x = torch.rand(1, 3, 416, 416, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        reference = model(x)
        cl = model.to(memory_format=torch.channels_last)(x.contiguous(memory_format=torch.channels_last))
    for a, b in zip(reference, cl):
        assert torch.allclose(a, b, atol=1e-4, rtol=1e-4)
