"""Benchmark of the `diffusion` backend (ColorFlow ICP + GSRP): pages/s and peak memory.

With CUDA: SD1.5-size models with random weights (timing does not depend on weight values;
LoRA r=64 merged, guider with 9 conditioning channels, MultiResNet [128,128,256,512,512]),
512x800 pages = 1024x1600 canvas, 10 UniPC steps, CFG 7.5, GSRP to 768x1200 (1.5x, as the
official app), bf16 by default. Also reports the UNet's achieved TFLOP/s (FLOPs counted with
torch.utils.flop_counter on one forward) as a fraction of --peak-tflops.

Without CUDA: the tiny config on CPU (64x64 query, 128x128 canvas), and says that the GPU
numbers are pending.

    python bench/bench_diffusion.py                      # auto: GPU if present
    python bench/bench_diffusion.py --pages 8 --batch-pages 4 --dtype bfloat16 --compile
    python bench/bench_diffusion.py --device cpu --full-size --query 64x64 --steps 1 --pages 1 --batch-pages 1   # dry run
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from chromaflow.models.colorflow.pipeline import ColorFlowPipeline, PipelineOptions

SD15_UNET = dict(
    block_out_channels=(320, 640, 1280, 1280),
    layers_per_block=2,
    down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
    up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3,
    cross_attention_dim=768,
    attention_head_dim=8,
    norm_num_groups=32,
    sample_size=64,
    in_channels=4,
    out_channels=4,
)
SD15_VAE = dict(
    block_out_channels=(128, 256, 512, 512),
    down_block_types=("DownEncoderBlock2D",) * 4,
    up_block_types=("UpDecoderBlock2D",) * 4,
    layers_per_block=2,
    latent_channels=4,
    norm_num_groups=32,
    sample_size=512,
)


def sd15_size_components(device: str):
    """Random-weight SD1.5-size components, built directly on `device`."""
    from diffusers import AutoencoderKL, UniPCMultistepScheduler
    from transformers import CLIPTextConfig, CLIPTextModel

    from chromaflow.models.colorflow.gsrp import MultiHiddenResNetModel
    from chromaflow.models.colorflow.guider import ColorGuider
    from chromaflow.models.colorflow.lora import add_colorflow_lora, merge_lora
    from chromaflow.models.colorflow.tiny import SD15_SCHEDULER, write_tiny_tokenizer
    from chromaflow.models.colorflow.unet import ColorFlowUNet2DConditionModel
    from chromaflow.models.colorflow.weights import ColorFlowComponents

    with torch.device(device):
        unet = ColorFlowUNet2DConditionModel(**SD15_UNET)
        add_colorflow_lora(unet, rank=64)
        merge_lora(unet)
        guider_kwargs = {k: v for k, v in SD15_UNET.items() if k not in ("down_block_types", "up_block_types", "sample_size", "out_channels")}
        guider = ColorGuider(conditioning_channels=9, **guider_kwargs)
        vae = AutoencoderKL(**SD15_VAE)
        channels = MultiHiddenResNetModel.channels_for_vae(SD15_VAE["block_out_channels"])
        multires = MultiHiddenResNetModel(channels, len(channels))
        # SD1.5's text tower (CLIP ViT-L/14 text: width 768, 12 layers, 12 heads)
        text_encoder = CLIPTextModel(
            CLIPTextConfig(hidden_size=768, intermediate_size=3072, num_attention_heads=12, num_hidden_layers=12,
                           projection_dim=768, max_position_embeddings=77)
        )
    folder = tempfile.mkdtemp(prefix="bench_tok_")
    write_tiny_tokenizer(Path(folder), max_length=77)
    from transformers import CLIPTokenizer

    tokenizer = CLIPTokenizer.from_pretrained(folder)
    scheduler = UniPCMultistepScheduler.from_config(SD15_SCHEDULER)
    return ColorFlowComponents(unet, guider, vae, text_encoder, tokenizer, scheduler, multires)


def tiny_components():
    from chromaflow.models.colorflow.tiny import write_tiny_release
    from chromaflow.models.colorflow.weights import load_colorflow

    colorflow, sd15 = write_tiny_release(tempfile.mkdtemp(prefix="bench_tiny_"))
    return load_colorflow(colorflow, sd15)


def unet_tflops(pipe: ColorFlowPipeline, batch: int, latent_hw: tuple[int, int], repeats: int = 5) -> dict:
    """FLOPs of one CFG UNet forward (batch 2B) and the achieved rate."""
    from torch.utils.flop_counter import FlopCounterMode

    device, dtype = pipe.device, pipe.dtype
    x = torch.randn(2 * batch, 4, *latent_hw, device=device, dtype=dtype)
    cond = torch.randn(batch, pipe.conditioning_channels, *latent_hw, device=device, dtype=dtype)
    text = pipe.prompt_embedding("manga").expand(2 * batch, -1, -1)
    t = torch.tensor(500, device=device)
    with torch.no_grad():
        down, mid, up = pipe.guider(x[:batch], t, cond)
        down, mid, up = [a.repeat(2, 1, 1, 1) for a in down], mid.repeat(2, 1, 1, 1), [a.repeat(2, 1, 1, 1) for a in up]
        counter = FlopCounterMode(display=False)
        with counter:
            pipe.unet(x, t, text, down, mid, up)
        flops = counter.get_total_flops()
        _sync(device)
        start = time.perf_counter()
        for _ in range(repeats):
            pipe.unet(x, t, text, down, mid, up)
        _sync(device)
        seconds = (time.perf_counter() - start) / repeats
    return {"unet_gflop_per_forward": flops / 1e9, "unet_forward_s": seconds, "unet_tflops": flops / seconds / 1e12}


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--dtype", default="bfloat16", choices=["float32", "float16", "bfloat16"])
    parser.add_argument("--pages", type=int, default=8, help="timed pages (after one warm-up batch)")
    parser.add_argument("--batch-pages", type=int, default=2)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--guidance", type=float, default=7.5)
    parser.add_argument("--no-gsrp", action="store_true")
    parser.add_argument("--compile", action="store_true", help="torch.compile the UNet and guider")
    parser.add_argument("--peak-tflops", type=float, default=989.0, help="GPU dense bf16 peak (H100 SXM: 989)")
    parser.add_argument("--full-size", action="store_true", help="SD1.5-size models also on CPU (a dry run of the GPU path)")
    parser.add_argument("--query", default=None, help="query WxH (default: 512x800 with SD1.5-size models, 64x64 tiny)")
    parser.add_argument("--json", type=Path, help="also write the result here")
    return parser.parse_args()


def time_pages(pipe: ColorFlowPipeline, args, query_w: int, query_h: int) -> tuple[int, float, tuple[int, int]]:
    """One warm-up batch, then args.pages pages timed. Returns (pages, seconds, GSRP size)."""
    rng = np.random.default_rng(0)
    canvas = rng.integers(0, 256, (2 * query_h, 2 * query_w, 3), dtype=np.uint8)
    mask = np.zeros(canvas.shape[:2], bool)
    mask[query_h // 2 : query_h // 2 + query_h, query_w // 2 : query_w // 2 + query_w] = True
    gsrp_size = (query_h * 3 // 2, query_w * 3 // 2)
    gray = rng.integers(0, 256, gsrp_size, dtype=np.uint8)

    def run_batch(seeds):
        outs = pipe.colorize_canvases([canvas] * len(seeds), [mask] * len(seeds), seeds)
        if not args.no_gsrp and pipe.multires is not None:
            for seed, out in zip(seeds, outs):
                crop = out[query_h // 2 : query_h // 2 + query_h, query_w // 2 : query_w // 2 + query_w]
                pipe.super_resolve(crop, gray, seed)

    run_batch(list(range(args.batch_pages)))  # warm-up (cudnn autotune, compile)
    if pipe.device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    _sync(pipe.device)
    start = time.perf_counter()
    done = 0
    while done < args.pages:
        n = min(args.batch_pages, args.pages - done)
        run_batch(list(range(done, done + n)))
        done += n
    _sync(pipe.device)
    return done, time.perf_counter() - start, gsrp_size


def main() -> None:
    args = parse_args()
    device = ("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto" else args.device
    gpu = device.startswith("cuda")
    full_size = gpu or args.full_size
    query_w, query_h = (512, 800) if full_size else (64, 64)
    if args.query:
        query_w, query_h = (int(v) for v in args.query.lower().split("x"))
    components = sd15_size_components(device) if full_size else tiny_components()
    dtype = getattr(torch, args.dtype) if gpu else torch.float32
    options = PipelineOptions(steps=args.steps, guidance_scale=args.guidance)
    pipe = ColorFlowPipeline.from_components(
        components, device=device, dtype=dtype, channels_last=gpu, torch_compile=args.compile, options=options
    )
    done, seconds, gsrp_size = time_pages(pipe, args, query_w, query_h)
    result = {
        "device": torch.cuda.get_device_name() if gpu else "cpu",
        "models": "SD1.5-size random weights" if full_size else "tiny random weights",
        "page": f"{query_w}x{query_h}",
        "canvas": f"{2 * query_w}x{2 * query_h}",
        "gsrp_output": None if args.no_gsrp else f"{gsrp_size[1]}x{gsrp_size[0]}",
        "dtype": str(dtype).replace("torch.", ""),
        "steps": args.steps,
        "guidance": args.guidance,
        "batch_pages": args.batch_pages,
        "compile": args.compile,
        "pages": done,
        "seconds": round(seconds, 3),
        "pages_per_s": round(done / seconds, 4),
    }
    if gpu:
        result["peak_gpu_memory_gib"] = round(torch.cuda.max_memory_allocated() / 2**30, 2)
    if full_size:
        try:  # FLOP counting through a compiled module may fail: keep the timing then
            rate = unet_tflops(pipe, args.batch_pages, (2 * query_h // 8, 2 * query_w // 8), repeats=5 if gpu else 1)
            rate["fraction_of_peak"] = round(rate["unet_tflops"] / args.peak_tflops, 3) if gpu else None
            result.update(rate)
        except Exception as exc:  # noqa: BLE001
            result["unet_tflops_error"] = f"{type(exc).__name__}: {exc}".splitlines()[0]
    if not gpu:
        result["note"] = "no CUDA device: CPU only; GPU numbers (SD1.5 size, 512x800, bf16) are pending"
    print(json.dumps(result, indent=2))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
