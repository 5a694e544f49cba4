"""The VGG-style emotion models of the study (protocol §5), with a width multiplier.

The backbone is :data:`BACKBONE_LAYERS` (the table of protocol §5). Every convolution has a bias and is followed by
``BatchNorm2d`` and ``ReLU``; padding is ``k // 2``, so stride-1 convolutions keep ``T x F``, the stride-2 one gives
``ceil(T / 2) x ceil(F / 2)`` and each max-pool floors the size by 2 (inputs of at least :data:`MIN_INPUT`). The
global average pool is a mean over both axes (``AdaptiveAvgPool2d(1)``'s CUDA backward is not deterministic).
``width`` scales every backbone channel count ``c`` to ``max(1, round(c * width))``.

Heads (``D`` = scaled 256): ``Linear(D, 8)`` for A2E and aA2E; ``Linear(D, 7) -> Linear(7, 8)`` with no
nonlinearity for A2B2E, aA2B2E and A2M2E, which also return the 7 bottleneck activations.
:func:`init_weights` zeroes the conv biases too, unlike the reference (immaterial before BatchNorm: protocol §5).
"""
from __future__ import annotations


import math
from typing import NamedTuple

import torch
from torch import nn

from mer_lib.config import EMOTIONS, MIDLEVEL, SYSTEM_REGISTRY, SystemInfo, system_info
from mer_lib.errors import MerError

#: Backbone layers at width 1.0: ``(kind, out_channels, kernel, stride)``;
#: ``("pool", ...)`` marks maxpool2 + dropout2d.
BACKBONE_LAYERS: tuple[tuple, ...] = (
    ("conv", 64, 5, 2),
    ("conv", 64, 3, 1),
    ("pool",),
    ("conv", 128, 3, 1),
    ("conv", 128, 3, 1),
    ("pool",),
    ("conv", 256, 3, 1),
    ("conv", 256, 3, 1),
    ("conv", 384, 3, 1),
    ("conv", 512, 3, 1),
    ("conv", 256, 1, 1),
)
#: Channel dropout probability after each max-pool.
DROPOUT = 0.3
#: Smallest time and frequency size (one row/column left after both max-pools).
MIN_INPUT = 7


#: What distinguishes the systems' networks and training: the registry's entries (:class:`mer_lib.config.SystemInfo`).
SystemSpec = SystemInfo


def system_spec(system: str) -> SystemInfo:
    """The registry entry of a system (``MerError`` for an unknown one)."""
    return system_info(system)


def plain_twin(system: str) -> str | None:
    """The system an adversarially trained one is the adversarial version of (aA2E -> A2E); ``None`` for the others."""
    spec = system_spec(system)
    if not spec.adversarial:
        return None
    return next((name for name, other in SYSTEM_REGISTRY.items() if not other.adversarial
                 and (other.bottleneck, other.midlevel_supervised) == (spec.bottleneck, spec.midlevel_supervised)), None)


def scaled_channels(channels: int, width: float) -> int:
    """``max(1, round(channels * width))``."""
    return max(1, int(round(channels * width)))


class ModelOutput(NamedTuple):
    """What a model returns: ``emotions`` (B, 8), ratings divided by 10, and ``bottleneck`` (B, 7) or ``None``."""

    emotions: torch.Tensor
    bottleneck: torch.Tensor | None


def _conv_block(c_in: int, c_out: int, kernel: int, stride: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(c_in, c_out, kernel, stride=stride, padding=kernel // 2),
                         nn.BatchNorm2d(c_out), nn.ReLU())


class Backbone(nn.Module):
    """The convolutional feature extractor; ``(B, 1, T, F) -> (B, D)``."""

    def __init__(self, width: float = 1.0) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        c_in = 1
        for spec in BACKBONE_LAYERS:
            if spec[0] == "pool":
                layers += [nn.MaxPool2d(2), nn.Dropout2d(DROPOUT)]
            else:
                _, c_out, kernel, stride = spec
                c_out = scaled_channels(c_out, width)
                layers.append(_conv_block(c_in, c_out, kernel, stride))
                c_in = c_out
        self.features = nn.Sequential(*layers)
        self.out_features = c_in

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Feature maps averaged over time and frequency.

        The weights' memory layout alone picks the convolution kernels: a one-channel input is laid out the same way in
        both layouts.
        """
        return self.features(x).mean(dim=(2, 3))


class MERModel(nn.Module):
    """Backbone plus the head of ``system``; ``width`` multiplies the backbone's channels (1.0: the paper's model)."""

    def __init__(self, system: str, width: float = 1.0) -> None:
        super().__init__()
        if not (isinstance(width, (int, float)) and math.isfinite(width) and width > 0):
            raise MerError(f"model width must be a positive number, got {width!r}")
        self.system = system
        self.spec = system_spec(system)
        self.width = float(width)
        self.backbone = Backbone(width)
        d = self.backbone.out_features
        if self.spec.bottleneck:
            self.bottleneck = nn.Linear(d, len(MIDLEVEL))
            self.emotion = nn.Linear(len(MIDLEVEL), len(EMOTIONS))
        else:
            self.bottleneck = None
            self.emotion = nn.Linear(d, len(EMOTIONS))
        init_weights(self)

    def forward(self, x: torch.Tensor) -> ModelOutput:
        """Predict emotions (and bottleneck activations) for inputs ``(B, 1, T, F)``."""
        if x.ndim != 4 or x.shape[1] != 1 or min(x.shape[-2:]) < MIN_INPUT:
            raise MerError(f"model input must have shape (B, 1, T, F) with T, F >= {MIN_INPUT}, "
                           f"got {tuple(x.shape)}")
        z = self.head_input(x)
        return ModelOutput(self.emotion(z), None if self.bottleneck is None else z)

    def head_input(self, x: torch.Tensor) -> torch.Tensor:
        """What the emotion layer reads: ``(B, 7)`` bottleneck activations or ``(B, D)`` pooled features (unchecked)."""
        h = self.backbone(x)
        return h if self.bottleneck is None else self.bottleneck(h)


def init_weights(model: nn.Module) -> nn.Module:
    """Reference initialisation, in place (protocol §5); returns ``model``."""
    for m in model.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            nn.init.kaiming_normal_(m.weight, mode="fan_in", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
    return model


def build_model(system: str, width: float = 1.0) -> MERModel:
    """A freshly initialised :class:`MERModel` of ``system`` at ``width`` (draws from torch's global RNG)."""
    return MERModel(system, width)


def memory_format_name(model: nn.Module) -> str:
    """``"channels_last"`` or ``"contiguous"``: how the model's convolution weights lie in memory.

    Judged on the convolutions with more than one input channel and a kernel wider than 1 (for the others both layouts
    coincide); ``"contiguous"`` for a model without such a convolution.
    """
    weights = [m.weight for m in model.modules()
               if isinstance(m, nn.Conv2d) and m.weight.shape[1] > 1 and m.weight.shape[2:].numel() > 1]
    if weights and all(w.is_contiguous(memory_format=torch.channels_last) and not w.is_contiguous()
                       for w in weights):
        return "channels_last"
    return "contiguous"


def count_parameters(model: nn.Module, trainable_only: bool = True) -> int:
    """Number of (trainable) parameters; BatchNorm running statistics are buffers, not counted."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


def conv_shapes(input_hw: tuple[int, int] = (313, 149), width: float = 1.0) -> list[dict]:
    """Per convolution: ``c_in, c_out, kernel, stride, h_out, w_out`` for an input ``T x F`` (for FLOP counts)."""
    h, w = input_hw
    c_in = 1
    out = []
    for spec in BACKBONE_LAYERS:
        if spec[0] == "pool":
            h, w = h // 2, w // 2
            continue
        _, c_out, k, s = spec
        c_out = scaled_channels(c_out, width)
        p = k // 2
        h, w = (h + 2 * p - k) // s + 1, (w + 2 * p - k) // s + 1
        out.append({"c_in": c_in, "c_out": c_out, "kernel": k, "stride": s, "h_out": h, "w_out": w})
        c_in = c_out
    return out


def forward_macs(system: str, width: float = 1.0, input_hw: tuple[int, int] = (313, 149)) -> int:
    """Multiply-accumulates of one example's forward pass (convolutions and linear layers).

    Conv: ``c_out * c_in * k * k * h_out * w_out``; linear: ``in * out``; the rest is ignored (a few percent at most).
    """
    convs = conv_shapes(input_hw, width)
    macs = sum(c["c_out"] * c["c_in"] * c["kernel"] ** 2 * c["h_out"] * c["w_out"] for c in convs)
    d = convs[-1]["c_out"]
    if system_spec(system).bottleneck:
        macs += d * len(MIDLEVEL) + len(MIDLEVEL) * len(EMOTIONS)
    else:
        macs += d * len(EMOTIONS)
    return int(macs)
