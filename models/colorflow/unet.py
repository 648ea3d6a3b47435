"""The SD1.5 UNet with ColorGuider add-samples injected into its down, mid AND up path.

Stock `UNet2DConditionModel` only takes ControlNet-style residuals (added to the skips
after each down block and to the mid output). ColorFlow adds its guider outputs to the
hidden state after *every* layer, so the skips carry the adds, and it also adds into every
up-block layer. We get exactly that with forward hooks on the stock submodules, installed
once (first forward); diffusers' own forward runs unchanged (no copied UNet code):

- pre-hook on down_blocks[0]: h = conv_in(x) + down_add[0] (the first skip stays the
  un-added conv_in output, as in the official code),
- output hook on each down layer (its transformer if it has one, else its resnet) and each
  downsampler: + next down_add,
- output hook on mid_block: + mid_add,
- output hook on each up layer (transformer, else resnet) and each upsampler: + next up_add.

Without add-samples the hooks do nothing, so the model is an ordinary diffusers UNet
(same config, same state-dict names; `from_pretrained(sd15/unet)` works).
"""

from __future__ import annotations

import torch
from diffusers.models.unets.unet_2d_condition import UNet2DConditionModel
from torch import nn


def _add_to_output(output, add: torch.Tensor):
    if isinstance(output, torch.Tensor):
        return output + add
    if isinstance(output, tuple):  # Transformer2DModel(..., return_dict=False)
        return (output[0] + add, *output[1:])
    output.sample = output.sample + add  # Transformer2DModelOutput
    return output


class ColorFlowUNet2DConditionModel(UNet2DConditionModel):
    """`UNet2DConditionModel` whose forward also accepts ColorGuider add-samples."""

    # __init__ is diffusers' own (its signature is the config schema); the hooks are
    # installed on first use instead.
    _pending_adds: tuple[list[torch.Tensor], torch.Tensor, list[torch.Tensor]] | None = None
    _hooks_installed: bool = False

    # -- hook installation -------------------------------------------------------------
    def _layer_modules(self, block: nn.Module) -> list[nn.Module]:
        """Modules after whose output one add-sample is applied, in order."""
        attentions = getattr(block, "attentions", None)
        layers = list(attentions) if attentions is not None else list(block.resnets)
        samplers = getattr(block, "downsamplers", None) or getattr(block, "upsamplers", None) or []
        return layers + list(samplers)

    def _install_add_hooks(self) -> None:
        if self._hooks_installed:
            return
        self._hooks_installed = True
        self.down_block_first.register_forward_pre_hook(self._first_down_pre_hook, with_kwargs=True)
        index = 1
        for block in self.down_blocks:
            for module in self._layer_modules(block):
                module.register_forward_hook(self._make_hook("down", index))
                index += 1
        self.num_down_adds = index
        self.mid_block.register_forward_hook(self._make_hook("mid", 0))
        index = 0
        for block in self.up_blocks:
            for module in self._layer_modules(block):
                module.register_forward_hook(self._make_hook("up", index))
                index += 1
        self.num_up_adds = index

    @property
    def down_block_first(self) -> nn.Module:
        return self.down_blocks[0]

    def _first_down_pre_hook(self, module, args, kwargs):
        if self._pending_adds is None:
            return None
        add = self._pending_adds[0][0]
        if "hidden_states" in kwargs:
            kwargs = dict(kwargs, hidden_states=kwargs["hidden_states"] + add)
        else:
            args = (args[0] + add, *args[1:])
        return args, kwargs

    def _make_hook(self, where: str, index: int):
        def hook(module, args, output):
            if self._pending_adds is None:
                return None
            down, mid, up = self._pending_adds
            add = {"down": lambda: down[index], "mid": lambda: mid, "up": lambda: up[index]}[where]()
            return _add_to_output(output, add)

        return hook

    # -- forward -----------------------------------------------------------------------
    def forward(
        self,
        sample: torch.Tensor,
        timestep: torch.Tensor | float | int,
        encoder_hidden_states: torch.Tensor,
        down_block_add_samples: list[torch.Tensor] | None = None,
        mid_block_add_sample: torch.Tensor | None = None,
        up_block_add_samples: list[torch.Tensor] | None = None,
        **kwargs,
    ):
        """diffusers' forward; with add-samples (all three given) the guider outputs are
        injected. The lists are read, never modified (the official code pops from them)."""
        given = [down_block_add_samples is not None, mid_block_add_sample is not None, up_block_add_samples is not None]
        self._install_add_hooks()
        if any(given) and not all(given):
            raise ValueError("ColorFlowUNet: pass all of down_block_add_samples, mid_block_add_sample, up_block_add_samples")
        if all(given):
            if len(down_block_add_samples) != self.num_down_adds or len(up_block_add_samples) != self.num_up_adds:
                raise ValueError(
                    f"ColorFlowUNet: expected {self.num_down_adds} down / {self.num_up_adds} up add-samples, "
                    f"got {len(down_block_add_samples)} / {len(up_block_add_samples)}"
                )
            self._pending_adds = (list(down_block_add_samples), mid_block_add_sample, list(up_block_add_samples))
        try:
            return super().forward(sample, timestep, encoder_hidden_states, **kwargs)
        finally:
            self._pending_adds = None
