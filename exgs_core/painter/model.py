"""GaussPainter: a TAESD-style VAE (diffusers AutoencoderTiny) with a one-step latent denoiser (UNet2DModel).

Forward pass for a raw render x (B, 3, H, W) in [0, 1] and its mask m = 1 - alpha (B, 1, H, W):

    z, skips = encoder(x)                        # AutoencoderTiny encoder; activations kept at 1, 1/2, 1/4
    z_hat = z + unet([z, pool8(m)], t_fixed)     # one step at a fixed timestep: the clean-latent estimate
    y, f = decoder(z_hat, + skip_k([skips_k, pool(m)(, stem(x, m))]) after each upsampling)
    out = x + head(f)                            # "residual" output (default): a correction of the raw render

The residual head is a zero-initialised 1x1 convolution on the decoder's last features, so a fresh painter
returns the raw render exactly and training only has to learn what to change. (The first design decoded the
image itself and blended it with the raw render through a learned gate: a VAE trained from scratch on a CPU
budget reconstructs at ~25 dB while most raw renders are above 35 dB, so the gate learned to stay shut and
the painter changed nothing. "gate" and "decoded" outputs stay selectable for GPU-scale training.)

The skip convolutions (pix2pix-turbo style, zero-initialised) carry full-resolution detail of the raw
render and the mask around the 8x latent bottleneck, so the network can sharpen visible pixels as well as
fill holes.
Images are in [0, 1] throughout (TAESD convention); the VAE weights stay compatible with diffusers'
AutoencoderTiny.encode/decode, which take and return [-1, 1] images.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from diffusers import AutoencoderTiny, UNet2DModel
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_utils import ModelMixin
from torch import nn

GATE_INIT_BIAS = -4.0  # output "gate": starts nearly closed (0.018), a fresh painter leaves the raw frame as it is
OUTPUTS = ("residual", "gate", "decoded")


@dataclass
class PainterConfig:
    """Sizes of a GaussPainter built from scratch (the shipped defaults are sized for a CPU)."""

    vae_channels: int = 24
    encoder_blocks: tuple[int, ...] = (0, 1, 2, 2)
    decoder_blocks: tuple[int, ...] = (2, 2, 1, 0)
    latent_channels: int = 4
    stem_channels: int = 16
    unet_channels: tuple[int, ...] = (48, 64, 96)
    unet_layers_per_block: int = 1
    unet_attention: bool = True
    output: str = "residual"  # one of OUTPUTS: raw + correction, gated blend, or the decoded image alone
    timestep: int = 199


class PainterConditioning(ModelMixin, ConfigMixin):
    """The parts of GaussPainter that are neither VAE nor UNet: the skip paths and the fixed timestep.

    `stem` computes full-resolution features from the raw render and its mask (narrow, so cheap on a CPU).
    Skip k takes the encoder activation at 1/2^k resolution plus the mask pooled to it (and at full
    resolution the stem features) and is added to the decoder after its upsampling to that resolution.
    The skip convs are zero-initialised: a fresh GaussPainter decodes exactly what the VAE alone would.
    `output` says how the decoder's last features become the frame: "residual" adds a correction to the raw
    render (zero-initialised head), "gate" blends the decoded image with the raw render per pixel, "decoded"
    returns the decoded image.
    """

    config_name = "config.json"

    @register_to_config
    def __init__(self, vae_channels: int = 24, skip_levels: int = 3, timestep: int = 199, stem_channels: int = 16,
                 output: str = "residual"):
        super().__init__()
        if output not in OUTPUTS:
            raise ValueError(f"output must be one of {OUTPUTS}, got {output!r}")
        self.head = None
        if output != "decoded":
            self.head = nn.Conv2d(vae_channels, 3 if output == "residual" else 1, kernel_size=1)
            nn.init.zeros_(self.head.weight)
            nn.init.constant_(self.head.bias, 0.0 if output == "residual" else GATE_INIT_BIAS)
        self.stem = nn.Sequential(nn.Conv2d(4, stem_channels, 3, padding=1), nn.ReLU(),
                                  nn.Conv2d(stem_channels, stem_channels, 3, padding=1), nn.ReLU())
        inputs = [vae_channels + 1 + (stem_channels if level == 0 else 0) for level in range(skip_levels)]
        self.skips = nn.ModuleList(nn.Conv2d(cin, vae_channels, kernel_size=1) for cin in inputs)
        for conv in self.skips:
            nn.init.zeros_(conv.weight)
            nn.init.zeros_(conv.bias)

    def skip(self, level: int, feature: torch.Tensor, mask: torch.Tensor, rgb: torch.Tensor) -> torch.Tensor:
        """What skip `level` adds to the decoder (feature: encoder activation at that level's resolution)."""
        parts = [feature, F.adaptive_avg_pool2d(mask, feature.shape[-2:])]
        if level == 0:
            parts.append(self.stem(torch.cat([rgb, mask], dim=1)))
        return self.skips[level](torch.cat(parts, dim=1))


def build_vae(config: PainterConfig) -> AutoencoderTiny:
    channels = (config.vae_channels,) * len(config.encoder_blocks)
    return AutoencoderTiny(
        in_channels=3, out_channels=3, latent_channels=config.latent_channels,
        encoder_block_out_channels=channels, decoder_block_out_channels=(config.vae_channels,) * len(config.decoder_blocks),
        num_encoder_blocks=tuple(config.encoder_blocks), num_decoder_blocks=tuple(config.decoder_blocks),
    )


def build_unet(config: PainterConfig) -> UNet2DModel:
    levels = len(config.unet_channels)
    unet = UNet2DModel(
        in_channels=config.latent_channels + 1, out_channels=config.latent_channels,
        block_out_channels=tuple(config.unet_channels), layers_per_block=config.unet_layers_per_block,
        down_block_types=("DownBlock2D",) * levels, up_block_types=("UpBlock2D",) * levels,
        add_attention=config.unet_attention, attention_head_dim=32, norm_num_groups=8,
    )
    nn.init.zeros_(unet.conv_out.weight)  # z_hat = z at initialisation
    nn.init.zeros_(unet.conv_out.bias)
    return unet


class GaussPainter(nn.Module):
    """Restores a raw render of a compressed scene; forward(rgb, mask) -> rgb, all (B, C, H, W) in [0, 1]."""

    def __init__(self, vae: AutoencoderTiny, unet: UNet2DModel, conditioning: PainterConditioning):
        super().__init__()
        self.vae, self.unet, self.conditioning = vae, unet, conditioning
        check_components(vae, unet, conditioning)

    @classmethod
    def from_config(cls, config: PainterConfig | None = None) -> "GaussPainter":
        config = config or PainterConfig()
        conditioning = PainterConditioning(vae_channels=config.vae_channels,
                                           skip_levels=len(config.encoder_blocks) - 1,
                                           timestep=config.timestep, stem_channels=config.stem_channels,
                                           output=config.output)
        return cls(build_vae(config), build_unet(config), conditioning)

    @property
    def pad_multiple(self) -> int:
        """Input sizes must be multiples of this (restore() pads to it): latent stride x UNet downsampling."""
        latent_stride = 2 ** (len(self.vae.config.num_encoder_blocks) - 1)
        return latent_stride * 2 ** (len(self.unet.config.block_out_channels) - 1)

    def encode(self, rgb: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Latent (B, 4, H/8, W/8) and the encoder activations before each downsampling (full res first)."""
        skips = []
        x = rgb
        for layer in self.vae.encoder.layers:
            if isinstance(layer, nn.Conv2d) and layer.stride == (2, 2):
                skips.append(x)
            x = layer(x)
        return x, skips

    def denoise(self, latent: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """One step at the fixed timestep: the clean-latent estimate from the degraded latent and the mask."""
        small_mask = F.adaptive_avg_pool2d(mask, latent.shape[-2:])
        timestep = torch.full((latent.shape[0],), self.conditioning.config.timestep, device=latent.device)
        residual = self.unet(torch.cat([latent, small_mask], dim=1), timestep).sample
        return latent + residual

    def decode(self, latent: torch.Tensor, skips: list[torch.Tensor] | None = None,
               mask: torch.Tensor | None = None, rgb: torch.Tensor | None = None,
               return_features: bool = False):
        """Image in [0, 1] (unclamped); with `skips` (from encode), mask and rgb the skip paths add detail.

        With return_features also the full-resolution features the last convolution maps to RGB.
        """
        x = torch.tanh(latent / 3) * 3
        levels = list(reversed(range(len(skips)))) if skips is not None else []
        after_upsample = False
        layers = list(self.vae.decoder.layers)
        for layer in layers[:-1]:
            x = layer(x)
            if isinstance(layer, nn.Upsample):
                after_upsample = True
            elif after_upsample and isinstance(layer, nn.Conv2d):
                after_upsample = False
                if levels:
                    level = levels.pop(0)
                    x = x + self.conditioning.skip(level, skips[level], mask, rgb)
        image = layers[-1](x)
        return (image, x) if return_features else image

    def reconstruct(self, rgb: torch.Tensor) -> torch.Tensor:
        """The plain VAE round trip (no skips, no denoiser): what stage-1 training optimises."""
        latent, _ = self.encode(rgb)
        return self.decode(latent)

    def forward(self, rgb: torch.Tensor, mask: torch.Tensor | None = None, return_latent: bool = False,
                reconstruct: bool = False):
        """Restored image; with return_latent also the denoised latent; with reconstruct the VAE round trip."""
        if reconstruct:
            return self.reconstruct(rgb)
        latent, skips = self.encode(rgb)
        clean = self.denoise(latent, mask)
        image, features = self.decode(clean, skips, mask, rgb, return_features=True)
        output, head = self.conditioning.config.output, self.conditioning.head
        if output == "residual":
            image = rgb + head(features)
        elif output == "gate":
            image = rgb + torch.sigmoid(head(features)) * (image - rgb)
        return (image, clean) if return_latent else image


def check_components(vae: AutoencoderTiny, unet: UNet2DModel, conditioning: PainterConditioning) -> None:
    """Raise ValueError when the three components do not fit together."""
    latent = vae.config.latent_channels
    if unet.config.in_channels != latent + 1 or unet.config.out_channels != latent:
        raise ValueError(f"unet takes {unet.config.in_channels} and gives {unet.config.out_channels} channels; "
                         f"the VAE latent needs {latent + 1} in (latent + mask) and {latent} out")
    widths = set(vae.config.encoder_block_out_channels) | set(vae.config.decoder_block_out_channels)
    if widths != {conditioning.config.vae_channels}:
        raise ValueError(f"conditioning skip convs are {conditioning.config.vae_channels} wide, VAE blocks are {widths}")
    stages = len(vae.config.num_encoder_blocks) - 1
    if conditioning.config.skip_levels != stages or len(vae.config.num_decoder_blocks) - 1 != stages:
        raise ValueError(f"{conditioning.config.skip_levels} skip levels for a VAE with {stages} down/up stages")


def parameter_count(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())
