"""Random-init base models written in the real folder layouts (tests and benchmarks only).

`train.random_base: tiny` writes models/colorflow/tiny.py's release into RUN_DIR/base
(sd15/ and colorflow/); `sd15` writes SD1.5-size random models (UNet, VAE, CLIP text
encoder of SD1.5's shapes) so the benchmark measures the real architecture without weights.
Real training always uses `train.sd15_path`.
"""

from __future__ import annotations

import json
from pathlib import Path

BASE_DIR = "base"
SD15_UNET = dict(
    block_out_channels=(320, 640, 1280, 1280), layers_per_block=2,
    down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
    up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3,
    cross_attention_dim=768, attention_head_dim=8, norm_num_groups=32, sample_size=64, in_channels=4, out_channels=4)
SD15_VAE = dict(
    block_out_channels=(128, 256, 512, 512), down_block_types=("DownEncoderBlock2D",) * 4,
    up_block_types=("UpDecoderBlock2D",) * 4, layers_per_block=2, latent_channels=4, norm_num_groups=32, sample_size=512)


def random_base(kind: str, run_dir: str | Path, seed: int = 0) -> Path:
    """Write (once) and return the SD1.5-layout folder of a random base of `kind`."""
    root = Path(run_dir) / BASE_DIR
    sd15 = root / "sd15"
    # the file each writer writes last marks a complete folder
    done = root / "colorflow" / "GraySD" / "MultiResNetModel.safetensors" if kind == "tiny" else \
        sd15 / "scheduler" / "scheduler_config.json"
    if done.is_file():
        return sd15
    if kind == "tiny":
        from chromaflow.models.colorflow.tiny import write_tiny_release

        write_tiny_release(root, seed=seed)
    elif kind == "sd15":
        _write_sd15_size(sd15, seed)
    else:
        raise ValueError(f"train.random_base: unknown kind {kind!r} (tiny, sd15)")
    return sd15


def _write_sd15_size(sd15: Path, seed: int) -> None:
    import torch
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    from chromaflow.models.colorflow.tiny import SD15_SCHEDULER, write_tiny_tokenizer

    torch.manual_seed(seed)
    UNet2DConditionModel(**SD15_UNET).save_pretrained(str(sd15 / "unet"), safe_serialization=True)
    AutoencoderKL(**SD15_VAE).save_pretrained(str(sd15 / "vae"), safe_serialization=True)
    text = CLIPTextConfig(hidden_size=768, intermediate_size=3072, num_attention_heads=12, num_hidden_layers=12,
                          projection_dim=768, max_position_embeddings=77, vocab_size=49408)
    CLIPTextModel(text).save_pretrained(str(sd15 / "text_encoder"), safe_serialization=True)
    write_tiny_tokenizer(sd15 / "tokenizer", max_length=77)
    (sd15 / "scheduler").mkdir(parents=True, exist_ok=True)
    # written last: its presence marks a complete folder
    (sd15 / "scheduler" / "scheduler_config.json").write_text(json.dumps(SD15_SCHEDULER, indent=2))
