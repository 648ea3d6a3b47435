"""ColorFlow ICP (in-context colorization) + GSRP (guided super-resolution) on stock diffusers.

ICP: the 2Hx2W canvas (gray query in the centre, reference patches around it) is encoded
into the condition [VAE(reference-only canvas)*sf, mask, VAE(query-only canvas)*sf] (9 ch)
or [VAE(canvas)*sf, mask] (5 ch); the latent is denoised with UniPC, classifier-free
guidance and the ColorGuider's add-samples injected into the LoRA'd SD1.5 UNet.

What differs from the official pipeline (same numbers, less work):
- the guider has no cross-attention, so under CFG its outputs are identical for the
  uncond and cond rows: it runs once per step on the B pages and its outputs are repeated
  (checked against the golden CFG case in tests/test_colorflow_golden.py),
- the embedding of the fixed prompt (and the empty negative prompt) is computed once,
- several pages go through one forward (per-page generators keep results independent of
  how pages are batched),
- LoRA merged into the UNet weights; bf16/fp16, SDPA (diffusers' default attention
  processor), channels_last, optional torch.compile; VAE tiling for big canvases.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from .gsrp import guided_super_resolution


@dataclass
class PipelineOptions:
    steps: int = 10
    guidance_scale: float = 7.5
    conditioning_scale: float = 1.0
    prompt: str = "manga"
    negative_prompt: str = ""
    gsrp_tile: int = 1024  # GSRP works on tiles of at most this side (pixels)
    gsrp_tile_overlap: int = 64
    vae_tiling_min_side: int = 2048  # diffusers' VAE tiling above this canvas side (1024x1600 runs untiled)


def _to_tensor(images: list[np.ndarray], device, dtype) -> torch.Tensor:
    """uint8 HxWx3 list -> (B,3,H,W) in [-1,1]."""
    batch = torch.from_numpy(np.stack(images)).to(device=device)
    return (batch.permute(0, 3, 1, 2).to(dtype) / 127.5 - 1.0).contiguous()


def _to_uint8(batch: torch.Tensor) -> list[np.ndarray]:
    images = ((batch.float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    return [img.permute(1, 2, 0).cpu().numpy() for img in images]


def make_generators(seeds: list[int]) -> list[torch.Generator]:
    # CPU generators: the same seed gives the same noise on any device
    return [torch.Generator("cpu").manual_seed(int(s)) for s in seeds]


def _randn(shape, generators: list[torch.Generator], device, dtype) -> torch.Tensor:
    rows = [torch.randn((1, *shape[1:]), generator=g, dtype=torch.float32) for g in generators]
    return torch.cat(rows).to(device=device, dtype=dtype)


class ColorFlowPipeline:
    def __init__(
        self,
        unet,
        guider,
        vae,
        text_encoder,
        tokenizer,
        scheduler,
        multires=None,
        *,
        device: str | torch.device = "cpu",
        dtype: torch.dtype = torch.float32,
        channels_last: bool = False,
        torch_compile: bool = False,
        options: PipelineOptions | None = None,
    ):
        self.device = torch.device(device)
        self.dtype = dtype
        self.options = options or PipelineOptions()
        # SD's VAE overflows in float16 (diffusers flags it `force_upcast`): keep it, and the
        # GSRP fusion that works on its features, in float32 then; bfloat16 is fine.
        upcast = dtype == torch.float16 and bool(getattr(vae.config, "force_upcast", False))
        self.vae_dtype = torch.float32 if upcast else dtype
        self.unet = self._place(unet, dtype)
        self.guider = self._place(guider, dtype)
        self.vae = self._place(vae, self.vae_dtype)
        self.multires = self._place(multires, self.vae_dtype) if multires is not None else None
        # The text encoder only ever embeds the fixed prompts (cached), so it stays on the CPU
        # in float32 and takes no GPU memory.
        self.text_encoder = text_encoder.to("cpu", torch.float32).eval().requires_grad_(False)
        self.tokenizer = tokenizer
        self.scheduler = scheduler
        self.conditioning_channels = int(guider.config.conditioning_channels)
        if self.conditioning_channels not in (5, 9):
            raise ValueError(f"ColorFlow guider: conditioning_channels must be 5 or 9, got {self.conditioning_channels}")
        self.vae_scale = 2 ** (len(self.vae.config.block_out_channels) - 1)
        self.unet_scale = 2 ** (len(self.unet.config.block_out_channels) - 1)
        self._prompt_cache: dict[str, torch.Tensor] = {}
        if channels_last:
            for model in (self.unet, self.guider, self.vae):
                model.to(memory_format=torch.channels_last)
        if torch_compile:
            self.unet = torch.compile(self.unet)
            self.guider = torch.compile(self.guider)

    def _place(self, model, dtype: torch.dtype):
        if next(model.parameters()).dtype != dtype:
            model = model.to(dtype=dtype)
        return model.to(self.device).eval().requires_grad_(False)

    @classmethod
    def from_components(cls, components, **kwargs) -> "ColorFlowPipeline":
        c = components
        return cls(c.unet, c.guider, c.vae, c.text_encoder, c.tokenizer, c.scheduler, c.multires, **kwargs)

    # -- text --------------------------------------------------------------------------
    @torch.no_grad()
    def prompt_embedding(self, prompt: str) -> torch.Tensor:
        """(1, tokens, dim) CLIP embedding, computed once per distinct prompt."""
        if prompt not in self._prompt_cache:
            ids = self.tokenizer(
                prompt,
                padding="max_length",
                max_length=self.tokenizer.model_max_length,
                truncation=True,
                return_tensors="pt",
            ).input_ids
            self._prompt_cache[prompt] = self.text_encoder(ids)[0].to(self.device, self.dtype)
        return self._prompt_cache[prompt]

    # -- condition ---------------------------------------------------------------------
    def _vae_sample(self, images: torch.Tensor, generators) -> torch.Tensor:
        """Scaled posterior samples; row i draws its noise from generators[i]."""
        self._maybe_tile_vae(images.shape[-2:])
        dist = self.vae.encode(images.to(self.vae_dtype)).latent_dist
        eps = _randn(dist.mean.shape, generators, self.device, dist.mean.dtype)
        # a posterior sample, as the official pipeline does (not the mean)
        return ((dist.mean + dist.std * eps) * self.vae.config.scaling_factor).to(self.dtype)

    def _maybe_tile_vae(self, size) -> None:
        if max(size) > self.options.vae_tiling_min_side:
            self.vae.enable_tiling()
        else:
            self.vae.disable_tiling()

    @torch.no_grad()
    def prepare_condition(self, canvases: torch.Tensor, generate_mask: torch.Tensor, generators) -> torch.Tensor:
        """canvases (B,3,H,W) in [-1,1]; generate_mask (B,1,H,W) 1 where the page is generated
        (the centre), 0 on the reference border. Returns the 5/9-channel latent condition."""
        keep = 1.0 - generate_mask  # ColorFlow's m: 0 in the centre, 1 on the references
        latent_size = (canvases.shape[-2] // self.vae_scale, canvases.shape[-1] // self.vae_scale)
        m = F.interpolate(keep, size=latent_size, mode="bilinear", align_corners=False)
        black = torch.full_like(canvases, -1.0)
        if self.conditioning_channels == 9:
            refs_only = torch.where(keep > 0.5, canvases, black)
            query_only = torch.where(keep > 0.5, black, canvases)
            # one VAE pass for both images; each page's generator draws its A noise, then its B
            both = self._vae_sample(torch.cat([refs_only, query_only]), [*generators, *generators])
            latent_refs, latent_query = both.chunk(2)
            return torch.cat([latent_refs, m, latent_query], 1)
        return torch.cat([self._vae_sample(canvases, generators), m], 1)

    # -- ICP ---------------------------------------------------------------------------
    @torch.no_grad()
    def colorize_canvases(
        self, canvases: list[np.ndarray], generate_masks: list[np.ndarray], seeds: list[int]
    ) -> list[np.ndarray]:
        """canvases: uint8 (2H,2W,3) each, same size; generate_masks: bool/uint8 (2H,2W), true
        where the page is generated. Returns the colorized canvases (uint8, same size)."""
        opts = self.options
        height, width = canvases[0].shape[:2]
        if height % (self.vae_scale * self.unet_scale) or width % (self.vae_scale * self.unet_scale):
            raise ValueError(f"canvas {width}x{height}: sides must be multiples of {self.vae_scale * self.unet_scale}")
        batch = len(canvases)
        generators = make_generators(seeds)
        images = _to_tensor(canvases, self.device, self.dtype)
        masks = torch.from_numpy(np.stack([np.asarray(m, dtype=bool) for m in generate_masks]).astype(np.float32))
        masks = masks[:, None].to(self.device, self.dtype)
        condition = self.prepare_condition(images, masks, generators)

        cond_emb = self.prompt_embedding(opts.prompt).expand(batch, -1, -1)
        use_cfg = opts.guidance_scale > 1.0
        if use_cfg:
            uncond_emb = self.prompt_embedding(opts.negative_prompt).expand(batch, -1, -1)
            text = torch.cat([uncond_emb, cond_emb])
        else:
            text = cond_emb

        self.scheduler.set_timesteps(opts.steps, device=self.device)
        latent_shape = (batch, self.unet.config.in_channels, height // self.vae_scale, width // self.vae_scale)
        latents = _randn(latent_shape, generators, self.device, self.dtype) * self.scheduler.init_noise_sigma
        for t in self.scheduler.timesteps:
            x = self.scheduler.scale_model_input(latents, t)
            # once per step: the guider ignores the text, so both CFG halves share its outputs
            down, mid, up = self.guider(x, t, condition, opts.conditioning_scale)
            if use_cfg:
                x = torch.cat([x, x])
                down, mid, up = [a.repeat(2, 1, 1, 1) for a in down], mid.repeat(2, 1, 1, 1), [
                    a.repeat(2, 1, 1, 1) for a in up
                ]
            eps = self.unet(x, t, text, down, mid, up).sample
            if use_cfg:
                eps_uncond, eps_cond = eps.chunk(2)
                eps = eps_uncond + opts.guidance_scale * (eps_cond - eps_uncond)
            latents = self.scheduler.step(eps, t, latents).prev_sample
        self._maybe_tile_vae((height, width))
        decoded = self.vae.decode((latents / self.vae.config.scaling_factor).to(self.vae_dtype)).sample
        return _to_uint8(decoded)

    # -- GSRP --------------------------------------------------------------------------
    @torch.no_grad()
    def super_resolve(self, color: np.ndarray, gray: np.ndarray, seed: int) -> np.ndarray:
        """color: uint8 (h,w,3) low-res colorization; gray: uint8 (H,W) or (H,W,3) page at the
        target size. Returns uint8 (H,W,3). Pages larger than `gsrp_tile` go tile by tile
        (overlapping tiles, linearly blended)."""
        import cv2

        if self.multires is None:
            raise RuntimeError("GSRP needs MultiResNetModel weights (GraySD/MultiResNetModel.safetensors)")
        height, width = gray.shape[:2]
        gray3 = np.repeat(gray[..., None], 3, axis=2) if gray.ndim == 2 else gray
        color_up = cv2.resize(color, (width, height), interpolation=cv2.INTER_CUBIC)
        generator = torch.Generator("cpu").manual_seed(int(seed))
        tile, overlap = self.options.gsrp_tile, self.options.gsrp_tile_overlap
        if max(height, width) <= tile:
            return self._gsrp_tile(color_up, gray3, generator)
        out = np.zeros((height, width, 3), np.float32)
        weight = np.zeros((height, width, 1), np.float32)
        step = tile - overlap
        for y0 in _tile_starts(height, tile, step):
            for x0 in _tile_starts(width, tile, step):
                y1, x1 = min(y0 + tile, height), min(x0 + tile, width)
                piece = self._gsrp_tile(color_up[y0:y1, x0:x1], gray3[y0:y1, x0:x1], generator)
                ramp = _blend_weights(y1 - y0, x1 - x0, overlap)
                out[y0:y1, x0:x1] += piece.astype(np.float32) * ramp
                weight[y0:y1, x0:x1] += ramp
        return np.clip(out / weight + 0.5, 0, 255).astype(np.uint8)

    def _gsrp_tile(self, color: np.ndarray, gray3: np.ndarray, generator) -> np.ndarray:
        height, width = color.shape[:2]
        pad_h, pad_w = -height % self.vae_scale, -width % self.vae_scale
        if pad_h or pad_w:
            pads = ((0, pad_h), (0, pad_w), (0, 0))
            color, gray3 = np.pad(color, pads, mode="edge"), np.pad(gray3, pads, mode="edge")
        result = guided_super_resolution(
            self.vae,
            self.multires,
            _to_tensor([color], self.device, self.vae_dtype),
            _to_tensor([gray3], self.device, self.vae_dtype),
            generator=generator,
        )
        return _to_uint8(result)[0][:height, :width]


def _tile_starts(length: int, tile: int, step: int) -> list[int]:
    if length <= tile:
        return [0]
    starts = list(range(0, length - tile, step))
    return starts + [length - tile]


def _blend_weights(height: int, width: int, overlap: int) -> np.ndarray:
    def ramp(n):
        r = np.ones(n, np.float32)
        k = min(overlap, n // 2)
        if k > 0:
            edge = (np.arange(k, dtype=np.float32) + 1) / (k + 1)
            r[:k], r[-k:] = edge, edge[::-1]
        return r

    return (ramp(height)[:, None] * ramp(width)[None, :])[..., None]
