"""ColorFlow's LoRA on the base UNet, through peft (`ModelMixin.add_adapter`).

The release's `GraySD/unet_lora.*` is a state dict saved from a UNet after
`add_adapter(LoraConfig(r=64, lora_alpha=64, ...))`, so its names are the module's own:
`<path>.lora_A.default.weight` / `<path>.lora_B.default.weight`. The official code loads it
with `strict=False`, which silently loads nothing when names differ; here every key is
accounted for (see `checked_load.LoadReport`). Accepted spellings: `.lora_A.default.`, the peft
export style `.lora_A.` (no adapter name), and either with a `unet.` or `base_model.model.`
prefix. Non-LoRA keys that name a UNet parameter are loaded too (as strict=False would).
"""

from __future__ import annotations

import re

import torch
from torch import nn

from .checked_load import load_state_dict_checked

LORA_TARGET_MODULES = ["to_k", "to_q", "to_v", "to_out.0", "ff.net.0.proj", "ff.net.2"]
ADAPTER_NAME = "default"
_PREFIXES = ("base_model.model.", "unet.")
_NO_ADAPTER = re.compile(r"\.lora_(A|B)\.weight$")


def add_colorflow_lora(unet: nn.Module, rank: int, alpha: float | None = None) -> None:
    """Wrap the UNet's attention/FF linears with LoRA (alpha defaults to rank: scaling 1,
    as in the release's r=64/alpha=64)."""
    from peft import LoraConfig

    config = LoraConfig(
        r=rank,
        lora_alpha=rank if alpha is None else alpha,
        init_lora_weights="gaussian",
        target_modules=LORA_TARGET_MODULES,
        lora_dropout=0.0,
    )
    unet.add_adapter(config, adapter_name=ADAPTER_NAME)


def normalize_lora_key(key: str) -> str:
    for prefix in _PREFIXES:
        if key.startswith(prefix):
            key = key[len(prefix):]
    return _NO_ADAPTER.sub(rf".lora_\1.{ADAPTER_NAME}.weight", key)


def lora_rank(state_dict: dict[str, torch.Tensor]) -> int:
    """Rank of a LoRA state dict (rows of any lora_A matrix)."""
    for key, value in state_dict.items():
        if ".lora_A." in key:
            return int(value.shape[0])
    raise ValueError("no lora_A tensors in the LoRA state dict")


def load_lora_weights(
    unet: nn.Module, state_dict: dict[str, torch.Tensor], source: str = "LoRA state dict", assign: bool = False
):
    """Load LoRA (and any matching non-LoRA) tensors into a UNet that already has the adapter.

    Fails (WeightsError) if a LoRA tensor of the model is missing from the file, or a file
    key matches nothing, or a shape differs. Returns the LoadReport."""
    renamed = {normalize_lora_key(k): v for k, v in state_dict.items()}
    if len(renamed) != len(state_dict):
        raise ValueError(f"{source}: several keys map to the same LoRA parameter after normalising prefixes")
    own = unet.state_dict()
    required = {k for k in own if ".lora_A." in k or ".lora_B." in k}
    if not required:
        raise ValueError(f"{source}: the UNet has no LoRA adapter; call add_colorflow_lora first")
    return load_state_dict_checked(unet, renamed, source, required_keys=required, assign=assign)


def merge_lora(unet) -> int:
    """Fold every LoRA into its base Linear (W + scale * B @ A) with diffusers' `fuse_lora`,
    then drop the LoRA layers (`unload_lora`), so inference runs plain Linears. Returns the
    number of merged layers."""
    from peft.tuners.tuners_utils import BaseTunerLayer

    merged = sum(isinstance(m, BaseTunerLayer) for m in unet.modules())
    if merged:
        unet.fuse_lora()
        unet.unload_lora()
    return merged
