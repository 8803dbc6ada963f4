"""The pixel-space baseline: a plain U-Net on the raw render + mask, predicting a residual in RGB.

It is the benchmark's yardstick: GaussPainter has to beat it when both are trained on the same pairs for the
same CPU time. Same interface as GaussPainter: forward(rgb, mask) -> rgb, (B, C, H, W) in [0, 1].
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_utils import ModelMixin
from torch import nn


def _double_conv(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1), nn.ReLU(inplace=True),
                         nn.Conv2d(cout, cout, 3, padding=1), nn.ReLU(inplace=True))


class PixelUNet(ModelMixin, ConfigMixin):
    """Encoder of double 3x3 convs with max-pooling, decoder with nearest upsampling and concatenated skips."""

    config_name = "config.json"

    @register_to_config
    def __init__(self, channels: tuple[int, ...] = (16, 32, 64, 128, 128)):
        super().__init__()
        channels = tuple(channels)
        self.down = nn.ModuleList()
        cin = 4
        for width in channels:
            self.down.append(_double_conv(cin, width))
            cin = width
        self.up = nn.ModuleList(_double_conv(channels[i + 1] + channels[i], channels[i])
                                for i in reversed(range(len(channels) - 1)))
        self.out = nn.Conv2d(channels[0], 3, 1)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    @property
    def pad_multiple(self) -> int:
        return 2 ** (len(self.config.channels) - 1)

    def forward(self, rgb: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        x = torch.cat([rgb, mask], dim=1)
        features = []
        for index, block in enumerate(self.down):
            if index > 0:
                x = F.max_pool2d(x, 2)
            x = block(x)
            features.append(x)
        features.pop()
        for block in self.up:
            skip = features.pop()
            x = block(torch.cat([F.interpolate(x, size=skip.shape[-2:], mode="nearest"), skip], dim=1))
        return rgb + self.out(x)
