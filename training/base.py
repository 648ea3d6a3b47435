"""The models a training run starts from, loaded on CPU in float32.

- the SD1.5 base (UNet, VAE, text encoder, tokenizer, DDPM noise schedule) from a local
  diffusers folder, checked key by key with the inference loader's `load_state_dict_checked`;
- the ColorGuider: from `train.init_weights` (the release's or a checkpoint's GraySD/), or
  from scratch as ColorFlow/BrushNet's `from_unet` does: the UNet's weights copied into the
  self-attention-only copy, `conv_in` duplicated into input channels 0-3 and 4-7, the
  `brushnet_*` projections zero (so a fresh guider adds nothing);
- the UNet LoRA (peft, rank `train.lora_rank`), from init_weights or fresh (B = 0);
- GSRP's MultiHiddenResNetModel, from init_weights or fresh.

`random_base` writes random-init base folders (tiny or SD1.5 size) for tests and benchmarks.
"""

from __future__ import annotations

import inspect
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from chromaflow.models.colorflow.weights import (
    GUIDER_FOLDER, WeightsError, find_weights_file, load_state_dict_checked, load_text_encoder, read_json,
    read_safetensors)

log = logging.getLogger(__name__)

# UNet block -> the guider's self-attention-only counterpart (ColorFlow's GraySD config)
GUIDER_BLOCKS = {"CrossAttnDownBlock2D": "SelfAttnDownBlock2D", "DownBlock2D": "DownBlock2D",
                 "CrossAttnUpBlock2D": "SelfAttnUpBlock2D", "UpBlock2D": "UpBlock2D"}
LATENT_CHANNELS = 4


@dataclass
class BaseModels:
    unet: Any
    vae: Any
    text_encoder: Any
    tokenizer: Any
    noise_scheduler: Any  # DDPMScheduler with SD1.5's betas: the forward process of training


def _load_checked(cls, folder: Path, stem: str = "diffusion_pytorch_model", config: dict | None = None):
    config = read_json(folder / "config.json") if config is None else config
    with torch.device("meta"):  # no random init: every tensor is assigned from the file
        model = cls.from_config(config)
    path = find_weights_file(folder, stem)
    load_state_dict_checked(model, read_safetensors(path), str(path), assign=True)
    return model


def load_base(sd15_path: str | Path) -> BaseModels:
    from diffusers import AutoencoderKL, DDPMScheduler
    from transformers import CLIPTokenizer

    from chromaflow.models.colorflow.unet import ColorFlowUNet2DConditionModel

    root = Path(sd15_path)
    if not root.is_dir():
        raise WeightsError(f"{root}: SD1.5 folder not found (train.sd15_path / colorize.diffusion.sd15_path)")
    unet = _load_checked(ColorFlowUNet2DConditionModel, root / "unet")
    vae = _load_checked(AutoencoderKL, root / "vae")
    text_encoder = load_text_encoder(root / "text_encoder", [])
    tokenizer = CLIPTokenizer.from_pretrained(str(root / "tokenizer"), local_files_only=True)
    scheduler = DDPMScheduler.from_config(read_json(root / "scheduler" / "scheduler_config.json"))
    for model in (unet, vae, text_encoder):
        model.requires_grad_(False)
    return BaseModels(unet, vae.eval(), text_encoder.eval(), tokenizer, scheduler)


def graysd_folder(init_weights: str | Path | None) -> Path | None:
    if not init_weights:
        return None
    folder = Path(init_weights) / GUIDER_FOLDER
    if not folder.is_dir():
        raise WeightsError(f"{folder}: train.init_weights has no GraySD/ folder (ColorFlow release or checkpoint)")
    return folder


def guider_from_unet(unet, conditioning_channels: int = 9):
    """A ColorGuider initialised from the UNet (ColorFlow's `ColorGuiderSDModel.from_unet`)."""
    from chromaflow.models.colorflow.guider import SELF_ATTN_MID, ColorGuider

    accepted = set(inspect.signature(ColorGuider.__init__).parameters)
    config = {k: v for k, v in unet.config.items()
              if k in accepted and k not in ("down_block_types", "up_block_types", "mid_block_type")}
    config["down_block_types"] = [GUIDER_BLOCKS[b] for b in unet.config.down_block_types]
    config["up_block_types"] = [GUIDER_BLOCKS[b] for b in unet.config.up_block_types]
    config["mid_block_type"] = SELF_ATTN_MID
    config["conditioning_channels"] = conditioning_channels
    guider = ColorGuider(**config)
    own, source = guider.state_dict(), unet.state_dict()
    copied = {k: source[k] for k in own if k in source and source[k].shape == own[k].shape}
    fresh = ("conv_in_condition.", "brushnet_")
    left = [k for k in own if k not in copied and not k.startswith(fresh)]
    if left:
        raise WeightsError(f"guider_from_unet: UNet has no weights for {', '.join(left[:5])}")
    with torch.no_grad():
        guider.load_state_dict(copied, strict=False)
        weight = guider.conv_in_condition.weight
        weight.zero_()
        weight[:, :LATENT_CHANNELS] = unet.conv_in.weight
        weight[:, LATENT_CHANNELS:2 * LATENT_CHANNELS] = unet.conv_in.weight
        guider.conv_in_condition.bias.copy_(unet.conv_in.bias)
    return guider


def load_guider(init: Path | None, unet, conditioning_channels: int | str = "auto"):
    from chromaflow.models.colorflow.guider import ColorGuider

    if init is None:
        return guider_from_unet(unet, 9 if conditioning_channels == "auto" else int(conditioning_channels))
    guider = _load_checked(ColorGuider, init)
    found = int(guider.config.conditioning_channels)
    if conditioning_channels != "auto" and int(conditioning_channels) != found:
        raise WeightsError(f"{init / 'config.json'}: guider has {found} conditioning channels, "
                           f"colorize.diffusion.conditioning_channels is {conditioning_channels}")
    return guider


def attach_lora(unet, init: Path | None, rank: int) -> int:
    """Add the LoRA (trainable) and freeze the base UNet. Returns the rank used."""
    from chromaflow.models.colorflow.lora import add_colorflow_lora, load_lora_weights, lora_rank

    state = None
    if init is not None:
        path = find_weights_file(init, "unet_lora")
        state = read_safetensors(path)
        found = lora_rank(state)
        if found != rank:
            raise WeightsError(f"{path}: LoRA rank is {found}, train.lora_rank is {rank}; set train.lora_rank={found}")
    add_colorflow_lora(unet, rank)
    if state is not None:
        load_lora_weights(unet, state, str(path))
    for name, param in unet.named_parameters():
        param.requires_grad_(".lora_" in name)
    return rank


def load_multires(init: Path | None, vae):
    from chromaflow.models.colorflow.gsrp import MultiHiddenResNetModel

    channels = MultiHiddenResNetModel.channels_for_vae(tuple(vae.config.block_out_channels))
    config = {"channels_list": channels, "num_tensors": len(channels)}
    if init is not None and any((init / f"MultiResNetModel{s}").exists() for s in (".safetensors", ".bin")):
        return _load_checked(MultiHiddenResNetModel, init, "MultiResNetModel", config=config)
    return MultiHiddenResNetModel(channels, len(channels))


def prompt_embedding(base: BaseModels, prompt: str) -> torch.Tensor:
    """(1, tokens, dim) CLIP embedding of the fixed prompt (as the inference pipeline computes it)."""
    ids = base.tokenizer(prompt, padding="max_length", max_length=base.tokenizer.model_max_length,
                         truncation=True, return_tensors="pt").input_ids
    with torch.no_grad():
        return base.text_encoder(ids)[0].float()
