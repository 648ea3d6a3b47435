"""GSRP: ColorFlow's guided super-resolution on the SD VAE.

The low-res colorized page (upsampled to the target size) and the high-res gray page are
both run through the VAE encoder, keeping the hidden state after conv_in and after each down
block. Per level, color and gray features are concatenated and fused by
`MultiHiddenResNetModel`; the fused list is added into the VAE decoder (after its conv_in
and before each up block) while it decodes the *color* latent. This restores the gray page's
fine lines and text that the 8x VAE latent loses.

The encoder/decoder walks below call the stock diffusers submodules in the order their own
forward does; only the adds are new.
"""

from __future__ import annotations

import torch
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_utils import ModelMixin
from torch import nn


class ResNetBlock(nn.Module):
    """conv3x3-BN-ReLU-conv3x3-BN + shortcut (1x1 conv + BN when channels change), ReLU."""

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        if in_channels != out_channels:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, 1, bias=False), nn.BatchNorm2d(out_channels)
            )
        else:
            self.shortcut = nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return torch.relu(out + self.shortcut(x))


class TwoLayerResNet(nn.Module):
    """Four ResNetBlocks; the first changes the channel count (name kept from the release)."""

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        self.block1 = ResNetBlock(in_channels, out_channels)
        self.block2 = ResNetBlock(out_channels, out_channels)
        self.block3 = ResNetBlock(out_channels, out_channels)
        self.block4 = ResNetBlock(out_channels, out_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.block4(self.block3(self.block2(self.block1(x))))


class MultiHiddenResNetModel(ModelMixin, ConfigMixin):
    """Level i maps 2*channels_list[i] -> channels_list[min(last, i+2)] channels.

    channels_list is `[vae_boc[0]] + vae_boc`, e.g. [128,128,256,512,512] for SD's VAE; the
    output channel pattern then matches the decoder's input at each injection point."""

    @register_to_config
    def __init__(self, channels_list: tuple[int, ...] = (128, 128, 256, 512, 512), num_tensors: int = 5):
        super().__init__()
        last = len(channels_list) - 1
        self.two_layer_resnets = nn.ModuleList(
            TwoLayerResNet(2 * channels_list[i], channels_list[min(last, i + 2)]) for i in range(num_tensors)
        )

    def forward(self, hidden_color: list[torch.Tensor], hidden_gray: list[torch.Tensor]) -> list[torch.Tensor]:
        return [
            block(torch.cat([c, g], dim=1))
            for block, c, g in zip(self.two_layer_resnets, hidden_color, hidden_gray, strict=True)
        ]

    @staticmethod
    def channels_for_vae(vae_block_out_channels: tuple[int, ...]) -> list[int]:
        return [vae_block_out_channels[0], *vae_block_out_channels]


def encode_with_hidden(vae, image: torch.Tensor) -> tuple[list[torch.Tensor], torch.Tensor, torch.Tensor]:
    """Run the VAE encoder keeping [conv_in output, each down block output].

    image in [-1, 1]. Returns (hidden list, posterior mean, posterior logvar clamped to
    [-30, 20] as diffusers' DiagonalGaussianDistribution does)."""
    enc = vae.encoder
    h = enc.conv_in(image)
    hidden = [h]
    for block in enc.down_blocks:
        h = block(h)
        hidden.append(h)
    h = enc.mid_block(h)
    h = enc.conv_out(enc.conv_act(enc.conv_norm_out(h)))
    if vae.quant_conv is not None:
        h = vae.quant_conv(h)
    mean, logvar = torch.chunk(h, 2, dim=1)
    return hidden, mean, torch.clamp(logvar, -30.0, 20.0)


def decode_with_hidden(vae, z: torch.Tensor, hidden: list[torch.Tensor]) -> torch.Tensor:
    """Decode latent z (NOT divided by scaling_factor: GSRP uses the raw posterior sample),
    adding hidden[-1] after conv_in and hidden[-2-k] before up block k."""
    dec = vae.decoder
    added = list(reversed(hidden))  # a reversed copy; the caller's list is left alone
    if len(added) != len(dec.up_blocks) + 1:
        raise ValueError(f"GSRP: need {len(dec.up_blocks) + 1} hidden tensors, got {len(hidden)}")
    if vae.post_quant_conv is not None:
        z = vae.post_quant_conv(z)
    h = dec.conv_in(z) + added[0]
    h = dec.mid_block(h, None)
    for k, block in enumerate(dec.up_blocks):
        h = block(h + added[k + 1], None)
    return dec.conv_out(dec.conv_act(dec.conv_norm_out(h)))


def guided_super_resolution(
    vae,
    multires: MultiHiddenResNetModel,
    color: torch.Tensor,
    gray: torch.Tensor,
    eps: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """color, gray: (B,3,H,W) in [-1,1] at the target size (color already upsampled; gray
    repeated to 3 channels). Returns the decoded image in [-1,1] (clamped), (B,3,H,W).

    The latent is a posterior *sample* as in the official code; pass `eps` (or a generator)
    for reproducibility. H and W must be multiples of the VAE's downscale factor."""
    # one encoder pass for both images (same per-sample math as two passes)
    batch = color.shape[0]
    hidden, mean, logvar = encode_with_hidden(vae, torch.cat([color, gray]))
    fused = multires([h[:batch] for h in hidden], [h[batch:] for h in hidden])
    mean, logvar = mean[:batch], logvar[:batch]
    if eps is None:
        device = generator.device if generator is not None else mean.device
        eps = torch.randn(mean.shape, generator=generator, device=device).to(mean)
    z = mean + torch.exp(0.5 * logvar) * eps
    return decode_with_hidden(vae, z, fused).clamp(-1, 1)
