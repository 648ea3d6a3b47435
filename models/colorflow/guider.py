"""ColorGuider: ColorFlow's BrushNet-style auxiliary branch for the SD1.5 UNet.

A copy of the UNet's down/mid/up structure whose transformer blocks have self-attention
only (no text cross-attention), fed with [noisy latent, condition] through
`conv_in_condition`. Every down, mid and up residual goes through a 1x1 projection
(`brushnet_*`) and is returned scaled by `conditioning_scale`; the patched UNet
(`unet.py`) adds them into its own down, mid and up path.

Built only from stock diffusers blocks: a "SelfAttn" block is a CrossAttn block whose
transformers get `cross_attention_dim=None`, which makes diffusers' BasicTransformerBlock
skip attn2 (same parameter names as the release: norm1/attn1/norm3/ff).

The config keys are those of the released `GraySD/config.json` (`ColorGuiderSDModel`), so
that file loads as is. Keys that only matter for training (`conditioning_embedding_out_channels`,
`brushnet_conditioning_channel_order`, ...) are accepted and ignored.
"""

from __future__ import annotations

import torch
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.embeddings import TimestepEmbedding, Timesteps
from diffusers.models.modeling_utils import ModelMixin
from diffusers.models.unets.unet_2d_blocks import (
    CrossAttnDownBlock2D,
    CrossAttnUpBlock2D,
    DownBlock2D,
    UNetMidBlock2DCrossAttn,
    UpBlock2D,
)
from torch import nn

SELF_ATTN_DOWN = "SelfAttnDownBlock2D"
SELF_ATTN_UP = "SelfAttnUpBlock2D"
SELF_ATTN_MID = "UNetMidBlock2DSelfAttn"


def _zero_conv(channels: int) -> nn.Conv2d:
    # zero-init so a freshly built guider adds nothing (ColorFlow/BrushNet/ControlNet convention)
    conv = nn.Conv2d(channels, channels, kernel_size=1)
    nn.init.zeros_(conv.weight)
    nn.init.zeros_(conv.bias)
    return conv


class ColorGuider(ModelMixin, ConfigMixin):
    """Auxiliary branch; `forward` returns (down_adds[12], mid_add, up_adds[15]) for SD topology."""

    config_name = "config.json"
    # Its blocks are stock diffusers blocks, which checkpoint like the UNet's (training:
    # train.gradient_checkpointing; same gradients as without, tests/test_training_units.py).
    _supports_gradient_checkpointing = True

    @register_to_config
    def __init__(
        self,
        in_channels: int = 4,
        conditioning_channels: int = 5,
        flip_sin_to_cos: bool = True,
        freq_shift: int = 0,
        down_block_types: tuple[str, ...] = (SELF_ATTN_DOWN, SELF_ATTN_DOWN, SELF_ATTN_DOWN, "DownBlock2D"),
        mid_block_type: str | None = SELF_ATTN_MID,
        up_block_types: tuple[str, ...] = ("UpBlock2D", SELF_ATTN_UP, SELF_ATTN_UP, SELF_ATTN_UP),
        only_cross_attention: bool = False,
        block_out_channels: tuple[int, ...] = (320, 640, 1280, 1280),
        layers_per_block: int = 2,
        downsample_padding: int = 1,
        mid_block_scale_factor: float = 1,
        act_fn: str = "silu",
        norm_num_groups: int = 32,
        norm_eps: float = 1e-5,
        cross_attention_dim: int = 1280,
        transformer_layers_per_block: int = 1,
        encoder_hid_dim: int | None = None,
        encoder_hid_dim_type: str | None = None,
        attention_head_dim: int | tuple[int, ...] = 8,
        num_attention_heads: int | tuple[int, ...] | None = None,
        use_linear_projection: bool = False,
        class_embed_type: str | None = None,
        addition_embed_type: str | None = None,
        addition_time_embed_dim: int | None = None,
        num_class_embeds: int | None = None,
        upcast_attention: bool = False,
        resnet_time_scale_shift: str = "default",
        projection_class_embeddings_input_dim: int | None = None,
        brushnet_conditioning_channel_order: str = "rgb",
        conditioning_embedding_out_channels: tuple[int, ...] = (16, 32, 96, 256),
        global_pool_conditions: bool = False,
        addition_embed_type_num_heads: int = 64,
    ):
        super().__init__()
        if class_embed_type or addition_embed_type or encoder_hid_dim_type or num_class_embeds:
            raise ValueError("ColorGuider: class/addition/encoder_hid embeddings are not used by ColorFlow's SD guider")
        if global_pool_conditions:
            raise ValueError("ColorGuider: global_pool_conditions=True is not supported (ColorFlow uses False)")
        levels = len(block_out_channels)
        # SD naming quirk: attention_head_dim is the number of heads when num_attention_heads is unset
        heads = num_attention_heads or attention_head_dim
        if isinstance(heads, int):
            heads = (heads,) * levels
        if isinstance(transformer_layers_per_block, int):
            transformer_layers_per_block = (transformer_layers_per_block,) * levels

        temb_channels = block_out_channels[0] * 4
        self.conv_in_condition = nn.Conv2d(
            in_channels + conditioning_channels, block_out_channels[0], kernel_size=3, padding=1
        )
        self.time_proj = Timesteps(block_out_channels[0], flip_sin_to_cos, freq_shift)
        self.time_embedding = TimestepEmbedding(block_out_channels[0], temb_channels, act_fn=act_fn)

        resnet_kwargs = dict(
            temb_channels=temb_channels,
            resnet_eps=norm_eps,
            resnet_act_fn=act_fn,
            resnet_groups=norm_num_groups,
            resnet_time_scale_shift=resnet_time_scale_shift,
        )
        attn_kwargs = dict(
            cross_attention_dim=None,  # self-attention only: the guider never sees the text
            use_linear_projection=use_linear_projection,
            upcast_attention=upcast_attention,
        )

        self.down_blocks, self.brushnet_down_blocks = _down_path(
            down_block_types, block_out_channels, layers_per_block, heads, transformer_layers_per_block,
            downsample_padding, resnet_kwargs, attn_kwargs,
        )
        if mid_block_type != SELF_ATTN_MID:
            raise ValueError(f"ColorGuider: unsupported mid block type {mid_block_type!r}")
        self.mid_block = UNetMidBlock2DCrossAttn(
            in_channels=block_out_channels[-1],
            transformer_layers_per_block=transformer_layers_per_block[-1],
            num_attention_heads=heads[-1],
            output_scale_factor=mid_block_scale_factor,
            **attn_kwargs,
            **resnet_kwargs,
        )
        self.brushnet_mid_block = _zero_conv(block_out_channels[-1])
        self.up_blocks, self.brushnet_up_blocks = _up_path(
            up_block_types, block_out_channels, layers_per_block, heads, transformer_layers_per_block,
            resnet_kwargs, attn_kwargs,
        )

    def time_embed(self, timestep: torch.Tensor | float | int, batch: int, dtype: torch.dtype) -> torch.Tensor:
        t = torch.as_tensor(timestep, device=self.conv_in_condition.weight.device)
        if t.ndim == 0:
            t = t[None]
        t = t.expand(batch)
        # Timesteps returns float32; cast like diffusers' UNet does before the MLP
        return self.time_embedding(self.time_proj(t).to(dtype))

    def forward(
        self,
        sample: torch.Tensor,
        timestep: torch.Tensor | float | int,
        condition: torch.Tensor,
        conditioning_scale: float | torch.Tensor = 1.0,
        encoder_hidden_states: torch.Tensor | None = None,
    ) -> tuple[list[torch.Tensor], torch.Tensor, list[torch.Tensor]]:
        """Return (down_adds, mid_add, up_adds), already multiplied by `conditioning_scale`.

        `encoder_hidden_states` is accepted for signature compatibility and ignored: the guider
        has no cross-attention, which is why the pipeline runs it once per step under CFG.
        """
        del encoder_hidden_states
        temb = self.time_embed(timestep, sample.shape[0], sample.dtype)
        h = self.conv_in_condition(torch.cat([sample, condition], dim=1))

        residuals = [h]
        for block in self.down_blocks:
            # stock diffusers block forward: one residual per layer plus one per downsampler
            h, res = block(hidden_states=h, temb=temb)
            residuals.extend(res)
        down_adds = _project(self.brushnet_down_blocks, residuals, conditioning_scale)

        h = self.mid_block(h, temb)
        mid_add = self.brushnet_mid_block(h) * conditioning_scale

        # Up path: stock up blocks do not expose per-layer outputs, so walk their layers
        # (the same calls their forward makes) and collect each layer's and upsampler's output.
        up_outputs = []
        for block in self.up_blocks:
            skips = residuals[-len(block.resnets):]
            residuals = residuals[: -len(block.resnets)]
            attentions = getattr(block, "attentions", None)
            for j, resnet in enumerate(block.resnets):
                h = torch.cat([h, skips[-1 - j]], dim=1)
                h = resnet(h, temb)
                if attentions is not None:
                    h = attentions[j](h, return_dict=False)[0]
                up_outputs.append(h)
            if block.upsamplers is not None:
                for upsampler in block.upsamplers:
                    h = upsampler(h)
                up_outputs.append(h)
        up_adds = _project(self.brushnet_up_blocks, up_outputs, conditioning_scale)
        # the guider's own up-path output is discarded (it has no conv_out)
        return down_adds, mid_add, up_adds


def _project(convs: nn.ModuleList, tensors: list[torch.Tensor], scale) -> list[torch.Tensor]:
    return [conv(t) * scale for conv, t in zip(convs, tensors, strict=True)]


def _down_path(block_types, channels, layers_per_block, heads, transformer_layers, downsample_padding,
               resnet_kwargs, attn_kwargs) -> tuple[nn.ModuleList, nn.ModuleList]:
    """The UNet's down blocks (self-attention ones for SelfAttnDownBlock2D) and one 1x1
    projection per residual they produce (conv_in's, each layer's, each downsampler's).
    Built in the release's order (block, then its projections)."""
    blocks, projections = nn.ModuleList(), nn.ModuleList([_zero_conv(channels[0])])
    out_ch = channels[0]
    for i, block_type in enumerate(block_types):
        in_ch, out_ch = out_ch, channels[i]
        is_final = i == len(channels) - 1
        common = dict(num_layers=layers_per_block, in_channels=in_ch, out_channels=out_ch,
                      add_downsample=not is_final, downsample_padding=downsample_padding, **resnet_kwargs)
        if block_type == SELF_ATTN_DOWN:
            block = CrossAttnDownBlock2D(transformer_layers_per_block=transformer_layers[i],
                                         num_attention_heads=heads[i], **attn_kwargs, **common)
        elif block_type == "DownBlock2D":
            block = DownBlock2D(**common)
        else:
            raise ValueError(f"ColorGuider: unsupported down block type {block_type!r}")
        blocks.append(block)
        for _ in range(layers_per_block + (0 if is_final else 1)):
            projections.append(_zero_conv(out_ch))
    return blocks, projections


def _up_path(block_types, channels, layers_per_block, heads, transformer_layers,
             resnet_kwargs, attn_kwargs) -> tuple[nn.ModuleList, nn.ModuleList]:
    """The up blocks and one 1x1 projection per layer output and upsampler output."""
    blocks, projections = nn.ModuleList(), nn.ModuleList()
    reversed_channels, reversed_heads = list(reversed(channels)), list(reversed(heads))
    reversed_layers = list(reversed(transformer_layers))
    levels = len(channels)
    out_ch = reversed_channels[0]
    for i, block_type in enumerate(block_types):
        prev_ch, out_ch = out_ch, reversed_channels[i]
        in_ch = reversed_channels[min(i + 1, levels - 1)]
        is_final = i == levels - 1
        common = dict(num_layers=layers_per_block + 1, in_channels=in_ch, out_channels=out_ch,
                      prev_output_channel=prev_ch, add_upsample=not is_final, resolution_idx=i, **resnet_kwargs)
        if block_type == SELF_ATTN_UP:
            block = CrossAttnUpBlock2D(transformer_layers_per_block=reversed_layers[i],
                                       num_attention_heads=reversed_heads[i], **attn_kwargs, **common)
        elif block_type == "UpBlock2D":
            block = UpBlock2D(**common)
        else:
            raise ValueError(f"ColorGuider: unsupported up block type {block_type!r}")
        blocks.append(block)
        for _ in range(layers_per_block + 1 + (0 if is_final else 1)):
            projections.append(_zero_conv(out_ch))
    return blocks, projections
