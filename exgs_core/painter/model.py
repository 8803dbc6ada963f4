"""GaussPainter: a TAESD-style VAE (diffusers AutoencoderTiny) with a one-step latent denoiser (UNet2DModel).

Forward pass for a raw render x (B, 3, H, W) in [0, 1] and its mask m = 1 - alpha (B, 1, H, W):

    skips, z = encoder(x)                       # AutoencoderTiny encoder; activations kept at 1, 1/2, 1/4
    z_hat = z + unet([z, pool8(m)], t_fixed)     # one step at a fixed timestep: the clean-latent estimate
    y = decoder(z_hat, + skip_k([skips_k, pool(m)]) after each upsampling)   # zero-initialised 1x1 convs

The skip convolutions (pix2pix-turbo style) carry full-resolution detail of the raw render and the mask
around the 8x latent bottleneck, so the network can sharpen visible pixels as well as fill holes.
Images are in [0, 1] throughout (TAESD convention); the VAE weights stay compatible with diffusers'
AutoencoderTiny.encode/decode, which take and return [-1, 1] images.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import torch
import torch.nn.functional as F
from diffusers import AutoencoderTiny, UNet2DModel
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_utils import ModelMixin
from torch import nn


@dataclass
class PainterConfig:
    """Sizes of a GaussPainter built from scratch (the shipped defaults are sized for a CPU)."""

    vae_channels: int = 32
    encoder_blocks: tuple[int, ...] = (1, 1, 2, 2)
    decoder_blocks: tuple[int, ...] = (2, 2, 1, 1)
    latent_channels: int = 4
    unet_channels: tuple[int, ...] = (64, 96, 128)
    unet_layers_per_block: int = 1
    unet_attention: bool = True
    timestep: int = 199
    extra: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return asdict(self)


class PainterConditioning(ModelMixin, ConfigMixin):
    """The parts of GaussPainter that are neither VAE nor UNet: skip convs (encoder -> decoder) and the timestep.

    skip k takes the encoder activation at 1/2^k resolution plus the mask pooled to it, and is added to the
    decoder after its upsampling to that resolution. Zero-initialised: a fresh GaussPainter decodes exactly
    what the VAE alone would.
    """

    config_name = "config.json"

    @register_to_config
    def __init__(self, vae_channels: int = 32, skip_levels: int = 3, timestep: int = 199):
        super().__init__()
        self.skips = nn.ModuleList(nn.Conv2d(vae_channels + 1, vae_channels, kernel_size=1)
                                   for _ in range(skip_levels))
        for conv in self.skips:
            nn.init.zeros_(conv.weight)
            nn.init.zeros_(conv.bias)


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
        conditioning = PainterConditioning(config.vae_channels, len(config.encoder_blocks) - 1, config.timestep)
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
               mask: torch.Tensor | None = None) -> torch.Tensor:
        """Image in [0, 1] (unclamped); with `skips` (from encode) the skip convs add encoder detail."""
        x = torch.tanh(latent / 3) * 3
        pending = list(reversed(skips)) if skips is not None else []
        convs = list(reversed(self.conditioning.skips)) if skips is not None else []
        after_upsample = False
        for layer in self.vae.decoder.layers:
            x = layer(x)
            if isinstance(layer, nn.Upsample):
                after_upsample = True
            elif after_upsample and isinstance(layer, nn.Conv2d):
                after_upsample = False
                if pending:
                    feature = pending.pop(0)
                    level_mask = F.adaptive_avg_pool2d(mask, feature.shape[-2:])
                    x = x + convs.pop(0)(torch.cat([feature, level_mask], dim=1))
        return x

    def reconstruct(self, rgb: torch.Tensor) -> torch.Tensor:
        """The plain VAE round trip (no skips, no denoiser): what stage-1 training optimises."""
        latent, _ = self.encode(rgb)
        return self.decode(latent)

    def forward(self, rgb: torch.Tensor, mask: torch.Tensor, return_latent: bool = False):
        latent, skips = self.encode(rgb)
        clean = self.denoise(latent, mask)
        out = self.decode(clean, skips, mask)
        return (out, clean) if return_latent else out


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
    if conditioning.config.skip_levels > stages or len(vae.config.num_decoder_blocks) - 1 != stages:
        raise ValueError(f"{conditioning.config.skip_levels} skip levels for a VAE with {stages} down/up stages")


def parameter_count(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())
