"""The VGG-style models: shapes, parameter count, initialisation."""
from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from mer_lib.config import SYSTEMS
from mer_lib.errors import MerError
from mer_lib.models.nets import (
    MERModel,
    build_model,
    conv_shapes,
    count_parameters,
    forward_macs,
    memory_format_name,
    scaled_channels,
    system_spec,
)

# protocol §5, written out independently of mer_lib.models.nets: (c_in, c_out, kernel) of every conv.
PAPER_CONVS = [(1, 64, 5), (64, 64, 3), (64, 128, 3), (128, 128, 3), (128, 256, 3), (256, 256, 3),
                (256, 384, 3), (384, 512, 3), (512, 256, 1)]
BOTTLENECK_SYSTEMS = ("A2B2E", "aA2B2E", "A2M2E")


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.mark.parametrize("system", SYSTEMS)
@pytest.mark.parametrize("width", [0.0625, 0.125, 0.5])
def test_output_shapes(system, width):
    torch.manual_seed(0)
    model = build_model(system, width).eval()
    out = model(torch.randn(3, 1, 40, 149))
    assert out.emotions.shape == (3, 8)
    if system in BOTTLENECK_SYSTEMS:
        assert out.bottleneck.shape == (3, 7)
        # no nonlinearity between bottleneck and emotions: emotions = W b + c
        lin = model.emotion
        torch.testing.assert_close(out.emotions, out.bottleneck @ lin.weight.T + lin.bias)
    else:
        assert out.bottleneck is None


@pytest.mark.parametrize("shape", [(2, 1, 313, 149), (1, 1, 7, 7), (2, 1, 33, 17)])
def test_any_input_size_and_full_width(shape):
    model = build_model("A2M2E", 1.0 if shape[2] < 100 else 0.0625).eval()
    with torch.no_grad():
        out = model(torch.randn(*shape))
    assert out.emotions.shape == (shape[0], 8) and out.bottleneck.shape == (shape[0], 7)


def test_too_small_input_is_a_clear_error():
    with pytest.raises(MerError, match="T, F >= 7"):
        build_model("A2E", 0.0625)(torch.zeros(1, 1, 7, 6))


def test_parameter_count_at_width_one_matches_design():
    expected_backbone = sum(ci * co * k * k + co + 2 * co for ci, co, k in PAPER_CONVS)  # conv w+b, BN w+b
    expected = {"A2E": expected_backbone + 256 * 8 + 8,
                "A2B2E": expected_backbone + 256 * 7 + 7 + 7 * 8 + 8}
    expected.update({"aA2E": expected["A2E"], "aA2B2E": expected["A2B2E"], "A2M2E": expected["A2B2E"]})
    for system in SYSTEMS:
        assert count_parameters(build_model(system, 1.0)) == expected[system], system


def test_width_scales_channels():
    model = build_model("A2E", 0.125)
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    assert [c.out_channels for c in convs] == [max(1, round(co * 0.125)) for _, co, _ in PAPER_CONVS]
    assert [c.out_channels for c in build_model("A2E", 0.001).modules() if isinstance(c, nn.Conv2d)] == [1] * 9
    assert model.emotion.in_features == 32
    assert scaled_channels(384, 0.0625) == 24


def test_layer_sizes_and_padding():
    """Spatial sizes of the reference: 157x75 after the strided conv, 39x18 at the end."""
    shapes = conv_shapes((313, 149), 1.0)
    assert (shapes[0]["h_out"], shapes[0]["w_out"]) == (157, 75)
    assert (shapes[2]["h_out"], shapes[2]["w_out"]) == (78, 37)
    assert (shapes[-1]["h_out"], shapes[-1]["w_out"]) == (39, 18)
    # the analytic shapes agree with the module's actual feature maps
    model = build_model("A2E", 0.0625).eval()
    seen = []
    for conv in (m for m in model.modules() if isinstance(m, nn.Conv2d)):
        conv.register_forward_hook(lambda mod, inp, out: seen.append(tuple(out.shape[2:])))
    with torch.no_grad():
        model(torch.randn(1, 1, 313, 149))
    assert seen == [(s["h_out"], s["w_out"]) for s in conv_shapes((313, 149), 0.0625)]
    # conv MACs: c_out * c_in * k * k * h_out * w_out
    first = 64 * 1 * 25 * 157 * 75
    assert forward_macs("A2E", 1.0) > first
    assert forward_macs("A2M2E", 1.0) - forward_macs("A2E", 1.0) == 256 * 7 + 7 * 8 - 256 * 8


def test_initialisation_statistics():
    torch.manual_seed(0)
    model = build_model("A2M2E", 1.0)
    for m in model.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            fan_in = m.weight[0].numel()
            assert torch.count_nonzero(m.bias) == 0
            if m.weight.numel() >= 5000:
                std = m.weight.std().item()
                assert abs(std / math.sqrt(2.0 / fan_in) - 1) < 0.05, (m, std)
                assert abs(m.weight.mean().item()) < 0.05 * std
        elif isinstance(m, nn.BatchNorm2d):
            assert torch.all(m.weight == 1) and torch.all(m.bias == 0)
    # the small linear layers too, pooled: standardised weights have unit variance
    z = torch.cat([(m.weight / math.sqrt(2.0 / m.weight.shape[1])).flatten()
                   for m in (model.bottleneck, model.emotion)])
    assert abs(z.std().item() - 1) < 0.1


def test_dropout_and_pooling_present():
    model = build_model("A2E", 0.25)
    kinds = [type(m) for m in model.backbone.features]
    assert kinds.count(nn.MaxPool2d) == 2 and kinds.count(nn.Dropout2d) == 2
    drops = [m for m in model.modules() if isinstance(m, nn.Dropout2d)]
    assert all(d.p == 0.3 for d in drops)
    # maxpool + dropout after the 2nd and the 4th conv
    assert kinds[2:4] == [nn.MaxPool2d, nn.Dropout2d] and kinds[6:8] == [nn.MaxPool2d, nn.Dropout2d]


def test_systems_and_errors():
    assert isinstance(build_model("aA2E", 0.1), MERModel)
    assert system_spec("A2M2E").midlevel_supervised and not system_spec("A2B2E").midlevel_supervised
    assert system_spec("aA2B2E").adversarial and system_spec("aA2B2E").bottleneck
    with pytest.raises(MerError, match="unknown system"):
        build_model("A2X", 1.0)
    with pytest.raises(MerError, match="width"):
        build_model("A2E", 0.0)


def test_memory_format_name():
    model = build_model("A2B2E", 0.125)
    assert memory_format_name(model) == "contiguous"
    assert memory_format_name(model.to(memory_format=torch.channels_last)) == "channels_last"
    # only the first conv (one input channel) and the 1x1 conv: both layouts coincide there
    assert memory_format_name(nn.Sequential(nn.Conv2d(1, 4, 3), nn.Conv2d(4, 2, 1))) == "contiguous"
