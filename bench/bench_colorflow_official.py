"""The official ColorFlow pipeline, timed at the settings of bench/bench_diffusion.py, for the
side-by-side comparison of issue 5. The official code is NOT part of this repo (Tencent's
academic, non-commercial licence): point --official at a checkout of TencentARC/ColorFlow
(commit 0f5c159 was used for the golden fixture). This script only imports it.

The official code needs its own environment: its vendored diffusers fork (0.31.0.dev0) is
put first on sys.path, and it imports names that newer transformers removed, so run it with
transformers 4.44.x, huggingface_hub 0.25.x, peft 0.12-0.13, accelerate, torchvision,
matplotlib (for colorflow_utils) next to torch; never in the project's venv. Example:

    python -m venv /tmp/venv-official && . /tmp/venv-official/bin/activate
    pip install torch==2.14.1 torchvision==0.29.1 transformers==4.44.2 huggingface_hub==0.25.2 \\
        peft==0.12.0 accelerate==0.34.2 safetensors matplotlib opencv-python-headless scipy
    python bench/bench_colorflow_official.py --official /path/to/ColorFlow            # GPU
    python bench/bench_colorflow_official.py --official /path/to/ColorFlow --tiny     # CPU smoke test

What is timed per page, as app.py's colorize_image does it: `ColorFlowSDPipeline(...)` on the
2W x 2H canvas (UniPC, CFG 7.5, 10 steps, the guider at batch 2, unmerged r=64 LoRA, fp16)
and GSRP (VAE `_encode(hidden_flag=True)` of the upsampled color crop and of the gray page,
`MultiHiddenResNetModel`, `_decode(hidden_list=...)`) to 1.5W x 1.5H. Models are SD1.5-size
with random weights (timing does not depend on weight values); `--tiny` uses the golden
fixture's tiny configs. The prompt embedding is computed once and passed as prompt_embeds
(the app encodes "manga" on every call; this only flatters the official number slightly).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from chromaflow.training.random_base import SD15_UNET, SD15_VAE  # plain dicts: imports no diffusers

FIXTURE = Path(__file__).resolve().parents[1] / "tests" / "fixtures" / "colorflow_tiny"
SD15_SCHEDULER = dict(num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                      prediction_type="epsilon", steps_offset=1)
LORA_TARGETS = ["to_k", "to_q", "to_v", "to_out.0", "ff.net.0.proj", "ff.net.2"]


def import_official(root: Path):
    """The fork's diffusers and colorflow_utils, from the checkout (first on sys.path)."""
    if not (root / "diffusers" / "src" / "diffusers").is_dir() or not (root / "colorflow_utils").is_dir():
        raise SystemExit(f"{root}: not a TencentARC/ColorFlow checkout (no diffusers/src or colorflow_utils)")
    # colorflow_utils imports the vendored ScreenStyle code as top-level `data`, `models`, ...
    sys.path[:0] = [str(root / "diffusers" / "src"), str(root), str(root / "BidirectionalTranslation")]
    import diffusers

    if not diffusers.__file__.startswith(str(root)):
        raise SystemExit(f"diffusers was imported from {diffusers.__file__}, not from the checkout's fork")
    from colorflow_utils.utils import MultiHiddenResNetModel

    return diffusers, MultiHiddenResNetModel


def build(diffusers, MultiHiddenResNetModel, tiny: bool, device, dtype):
    import torch
    from peft import LoraConfig
    from transformers import CLIPTextConfig, CLIPTextModel

    if tiny:
        unet_cfg = json.loads((FIXTURE / "unet_config.json").read_text())
        vae_cfg = json.loads((FIXTURE / "vae_config.json").read_text())
        multires_cfg = json.loads((FIXTURE / "multires_config.json").read_text())
        text_cfg = CLIPTextConfig(hidden_size=unet_cfg["cross_attention_dim"], intermediate_size=37, num_attention_heads=2,
                                  num_hidden_layers=2, vocab_size=1000, max_position_embeddings=77)
        rank = 4
    else:
        unet_cfg, vae_cfg = SD15_UNET, SD15_VAE
        multires_cfg = {"channels_list": [128, 128, 256, 512, 512], "num_tensors": 5}
        text_cfg = CLIPTextConfig(hidden_size=768, intermediate_size=3072, num_attention_heads=12, num_hidden_layers=12,
                                  projection_dim=768, max_position_embeddings=77)
        rank = 64
    unet_cfg = {k: v for k, v in unet_cfg.items() if not k.startswith("_")}
    vae_cfg = {k: v for k, v in vae_cfg.items() if not k.startswith("_")}
    unet = diffusers.UNet2DConditionModel(**unet_cfg)
    guider = diffusers.ColorGuiderSDModel.from_unet(unet, conditioning_channels=9)
    vae = diffusers.AutoencoderKL(**vae_cfg)
    text_encoder = CLIPTextModel(text_cfg)
    scheduler = diffusers.UniPCMultistepScheduler.from_config(SD15_SCHEDULER)
    pipe = diffusers.ColorFlowSDPipeline(vae=vae, text_encoder=text_encoder, tokenizer=None, unet=unet,
                                         colorguider=guider, scheduler=scheduler, safety_checker=None,
                                         feature_extractor=None, requires_safety_checker=False)
    pipe.to(device, dtype)
    # As app.py: LoRA added with PEFT and left unmerged.
    pipe.unet.add_adapter(LoraConfig(r=rank, lora_alpha=rank, init_lora_weights="gaussian", target_modules=LORA_TARGETS))
    pipe.unet.to(device, dtype)
    multires = MultiHiddenResNetModel(multires_cfg["channels_list"], multires_cfg["num_tensors"]).to(device, dtype).eval()
    with torch.no_grad():
        ids = torch.randint(0, text_cfg.vocab_size, (1, 77), device=device)
        prompt = text_encoder(ids)[0]
        negative = text_encoder(torch.randint(0, text_cfg.vocab_size, (1, 77), device=device))[0]
    pipe.set_progress_bar_config(disable=True)
    return pipe, multires, prompt, negative


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--official", type=Path, required=True, help="TencentARC/ColorFlow checkout")
    ap.add_argument("--tiny", action="store_true", help="golden-fixture tiny configs (CPU smoke test)")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--dtype", default="float16", choices=["float16", "bfloat16", "float32"], help="app.py: float16")
    ap.add_argument("--query", default=None, help="WxH (default 512x800; --tiny: 64x64)")
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--guidance", type=float, default=7.5)
    ap.add_argument("--pages", type=int, default=4, help="timed pages, after one warm-up page")
    ap.add_argument("--json", type=Path, help="also write the result here")
    args = ap.parse_args()

    diffusers, MultiHiddenResNetModel = import_official(args.official.resolve())
    import numpy as np
    import torch
    from PIL import Image
    from torchvision import transforms

    device = ("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto" else args.device
    gpu = device.startswith("cuda")
    dtype = getattr(torch, args.dtype) if gpu else torch.float32
    w, h = (int(v) for v in (args.query or ("64x64" if args.tiny else "512x800")).lower().split("x"))
    torch.manual_seed(0)
    pipe, multires, prompt, negative = build(diffusers, MultiHiddenResNetModel, args.tiny, device, dtype)
    rng = np.random.default_rng(0)
    canvas = Image.fromarray(rng.integers(0, 256, (2 * h, 2 * w, 3), dtype=np.uint8))
    mask = np.zeros((2 * h, 2 * w, 3), np.uint8)  # app.py's mask.png: white (255) in the centre
    mask[h // 2: h // 2 + h, w // 2: w // 2 + w] = 255
    mask = Image.fromarray(mask)
    gray = Image.fromarray(rng.integers(0, 256, (h * 3 // 2, w * 3 // 2, 3), dtype=np.uint8))
    to_tensor = transforms.Compose([transforms.ToTensor(), transforms.Normalize([0.5], [0.5])])

    def page(seed: int) -> None:
        generator = torch.Generator(device=device).manual_seed(seed)
        image = pipe(prompt_embeds=prompt, negative_prompt_embeds=negative, cond_image=canvas, cond_mask=mask,
                     num_inference_steps=args.steps, guidance_scale=args.guidance, generator=generator).images[0]
        with torch.no_grad():  # GSRP as app.py: centre crop, up to 1.5x, fused VAE decode
            cw, ch = image.size
            crop = image.crop((cw // 4, ch // 4, cw // 4 + cw // 2, ch // 4 + ch // 2)).resize(gray.size)
            color_t = to_tensor(crop).unsqueeze(0).to(device, dtype)
            gray_t = to_tensor(gray).unsqueeze(0).to(device, dtype)
            posterior, hidden_color = pipe.vae._encode(color_t, return_dict=False, hidden_flag=True)
            _, hidden_gray = pipe.vae._encode(gray_t, return_dict=False, hidden_flag=True)
            fused = multires([torch.cat(pair, dim=1) for pair in zip(hidden_color, hidden_gray)])
            out = pipe.vae._decode(posterior.sample(), return_dict=False, hidden_list=fused)[0]
            assert out.shape[-2:] == (gray.size[1], gray.size[0]), out.shape

    page(0)  # warm-up
    if gpu:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    for seed in range(1, args.pages + 1):
        page(seed)
    if gpu:
        torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    result = {"code": f"official ColorFlow ({args.official.name}, diffusers {diffusers.__version__})",
              "device": torch.cuda.get_device_name() if gpu else "cpu",
              "models": "tiny random weights" if args.tiny else "SD1.5-size random weights",
              "page": f"{w}x{h}", "canvas": f"{2 * w}x{2 * h}", "gsrp_output": f"{w * 3 // 2}x{h * 3 // 2}",
              "dtype": str(dtype).replace("torch.", ""), "steps": args.steps, "guidance": args.guidance,
              "pages": args.pages, "seconds": round(seconds, 3), "pages_per_s": round(args.pages / seconds, 4)}
    if gpu:
        result["peak_gpu_memory_gib"] = round(torch.cuda.max_memory_allocated() / 2**30, 2)
    print(json.dumps(result, indent=2))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
