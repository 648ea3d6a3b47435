"""Tiny random-weight models written in the real folder layouts (tests and the CPU benchmark).

`write_tiny_release(root)` creates `root/colorflow/GraySD/...` (the release layout) and
`root/sd15/{unet,vae,text_encoder,tokenizer,scheduler}` (diffusers layout) with models of
SD1.5's topology shrunk (the golden fixture's configs), a CLIP text encoder of width 32 and a
CLIP tokenizer built offline from a tiny vocab.json/merges.txt. Nothing is downloaded.
Weights that ColorFlow zero-initialises (guider projections, LoRA B) are randomised so
every component affects the output.
"""

from __future__ import annotations

import json
import string
from pathlib import Path

import torch

TINY_UNET = {
    "block_out_channels": [8, 16, 24, 24],
    "layers_per_block": 2,
    "down_block_types": ["CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"],
    "up_block_types": ["UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"],
    "cross_attention_dim": 32,
    "attention_head_dim": 2,
    "norm_num_groups": 4,
    "sample_size": 16,
    "in_channels": 4,
    "out_channels": 4,
}
TINY_VAE = {
    "block_out_channels": [4, 8, 16, 16],
    "down_block_types": ["DownEncoderBlock2D"] * 4,
    "up_block_types": ["UpDecoderBlock2D"] * 4,
    "layers_per_block": 1,
    "latent_channels": 4,
    "norm_num_groups": 2,
    "in_channels": 3,
    "out_channels": 3,
    "sample_size": 32,
}
# SD1.5's scheduler/scheduler_config.json (PNDM; the pipeline swaps in UniPC from it)
SD15_SCHEDULER = {
    "_class_name": "PNDMScheduler",
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
    "beta_start": 0.00085,
    "num_train_timesteps": 1000,
    "set_alpha_to_one": False,
    "skip_prk_steps": True,
    "steps_offset": 1,
    "trained_betas": None,
    "clip_sample": False,
}


def write_tiny_tokenizer(folder: Path, max_length: int = 16) -> None:
    """A CLIP BPE tokenizer over lowercase letters (no merges): enough for "manga"."""
    from transformers import CLIPTokenizer

    folder.mkdir(parents=True, exist_ok=True)
    tokens = ["<|startoftext|>", "<|endoftext|>"]
    for ch in string.ascii_lowercase + string.digits + ".,!?'":
        tokens += [ch, ch + "</w>"]
    # transformers 5 takes the vocab itself (a `vocab_file=` argument is silently ignored,
    # which left a 3-token vocab that maps every prompt to the same ids)
    tokenizer = CLIPTokenizer(vocab={t: i for i, t in enumerate(tokens)}, merges=[], model_max_length=max_length)
    if tokenizer("manga").input_ids == tokenizer("").input_ids:
        raise RuntimeError("tiny CLIP tokenizer: prompts are not told apart")
    tokenizer.save_pretrained(str(folder))


def _randomize_zero_inits(model: torch.nn.Module, generator: torch.Generator) -> None:
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "brushnet_" in name or "lora_B" in name:
                param.copy_(torch.randn(param.shape, generator=generator) * 0.1)


def write_tiny_release(root: str | Path, conditioning_channels: int = 9, seed: int = 0) -> tuple[Path, Path]:
    """Returns (colorflow_path, sd15_path)."""
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from safetensors.torch import save_file
    from transformers import CLIPTextConfig, CLIPTextModel

    from .gsrp import MultiHiddenResNetModel
    from .guider import ColorGuider
    from .lora import add_colorflow_lora

    root = Path(root)
    colorflow, sd15 = root / "colorflow", root / "sd15"
    graysd = colorflow / "GraySD"
    graysd.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed)

    unet = UNet2DConditionModel(**TINY_UNET)
    unet.save_pretrained(str(sd15 / "unet"), safe_serialization=True)
    AutoencoderKL(**TINY_VAE).save_pretrained(str(sd15 / "vae"), safe_serialization=True)
    text_config = CLIPTextConfig(
        hidden_size=TINY_UNET["cross_attention_dim"],
        intermediate_size=64,
        num_attention_heads=2,
        num_hidden_layers=2,
        vocab_size=128,
        max_position_embeddings=16,
        bos_token_id=0,
        eos_token_id=1,
        pad_token_id=1,
    )
    CLIPTextModel(text_config).save_pretrained(str(sd15 / "text_encoder"), safe_serialization=True)
    write_tiny_tokenizer(sd15 / "tokenizer", max_length=16)
    (sd15 / "scheduler").mkdir(parents=True, exist_ok=True)
    (sd15 / "scheduler" / "scheduler_config.json").write_text(json.dumps(SD15_SCHEDULER, indent=2))

    guider_config = {
        k: v for k, v in TINY_UNET.items() if k not in ("down_block_types", "up_block_types", "sample_size", "out_channels")
    }
    guider = ColorGuider(conditioning_channels=conditioning_channels, **guider_config)
    _randomize_zero_inits(guider, generator)
    config = dict(guider.config)
    config["_class_name"] = "ColorGuiderSDModel"  # as the release's GraySD/config.json
    (graysd / "config.json").write_text(json.dumps(config, indent=2))
    save_file(guider.state_dict(), str(graysd / "diffusion_pytorch_model.safetensors"))

    add_colorflow_lora(unet, rank=4)
    _randomize_zero_inits(unet, generator)
    lora = {k: v.contiguous() for k, v in unet.state_dict().items() if ".lora_" in k}
    save_file(lora, str(graysd / "unet_lora.safetensors"))

    channels = MultiHiddenResNetModel.channels_for_vae(tuple(TINY_VAE["block_out_channels"]))
    multires = MultiHiddenResNetModel(channels, len(channels))
    save_file(multires.state_dict(), str(graysd / "MultiResNetModel.safetensors"))
    return colorflow, sd15
