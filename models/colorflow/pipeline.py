"""ColorFlow ICP (in-context colorization) + GSRP (guided super-resolution) on stock diffusers.

ICP: the 2Hx2W canvas (gray query in the centre, reference patches around it) is encoded
into the condition [VAE(reference-only canvas)*sf, mask, VAE(query-only canvas)*sf] (9 ch)
or [VAE(canvas)*sf, mask] (5 ch); the latent is denoised with UniPC, classifier-free
guidance and the ColorGuider's add-samples injected into the LoRA'd SD1.5 UNet.

One step is `denoise_step` = scale_model_input -> `guided_unet` (guider once, UNet on the
CFG batch, same sample and timestep for both) -> `cfg_combine` -> scheduler.step; the golden
CFG case drives these methods (tests/test_colorflow_golden.py) and tests/test_colorflow_oracle.py
rebuilds a whole loop by hand from the components.

What differs from the official pipeline (same numbers, less work):
- the guider has no cross-attention, so under CFG its outputs are identical for the
  uncond and cond rows: it runs once per step on the B pages and its outputs are repeated,
- the embedding of the fixed prompt (and the empty negative prompt) is computed once,
- several pages go through one forward (per-page generators keep results independent of
  how pages are batched),
- LoRA merged into the UNet weights; bf16/fp16, SDPA (diffusers' default attention
  processor), channels_last, optional torch.compile; VAE tiling for big canvases.
"""

from __future__ import annotations

from collections.abc import Callable
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


def assemble_condition(latent_a: torch.Tensor, mask: torch.Tensor, latent_b: torch.Tensor | None = None) -> torch.Tensor:
    """ColorFlow's condition channel order: 9 ch [VAE(references) , m, VAE(query)], or 5 ch
    [VAE(canvas), m] (latent_b None)."""
    parts = [latent_a, mask] if latent_b is None else [latent_a, mask, latent_b]
    return torch.cat(parts, dim=1)


def cfg_combine(eps_uncond: torch.Tensor, eps_cond: torch.Tensor, scale: float) -> torch.Tensor:
    """Classifier-free guidance: move from the unconditional prediction towards the conditional."""
    return eps_uncond + scale * (eps_cond - eps_uncond)


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
        # in float32 and takes no GPU memory. None: callers pass text embeddings themselves.
        if text_encoder is not None:
            text_encoder = text_encoder.to("cpu", torch.float32).eval().requires_grad_(False)
        self.text_encoder = text_encoder
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
            if self.text_encoder is None:
                raise RuntimeError("ColorFlowPipeline was built without a text encoder: pass text embeddings")
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

    def latent_mask(self, generate_mask: torch.Tensor) -> torch.Tensor:
        """ColorFlow's m at latent size: 0 where the page is generated, 1 on the references
        (generate_mask (B,1,H,W) is 1 where generated), bilinear as the official code."""
        size = (generate_mask.shape[-2] // self.vae_scale, generate_mask.shape[-1] // self.vae_scale)
        keep = (1.0 - generate_mask).to(self.dtype)
        return F.interpolate(keep, size=size, mode="bilinear", align_corners=False)

    @torch.no_grad()
    def prepare_condition(self, canvases: torch.Tensor, generate_mask: torch.Tensor, generators) -> torch.Tensor:
        """canvases (B,3,H,W) in [-1,1]; generate_mask (B,1,H,W) 1 where the page is generated
        (the centre), 0 on the reference border. Returns the 5/9-channel latent condition.

        Noise order per page (a contract the oracle test relies on): its generator draws the
        reference-canvas posterior noise, then the query-canvas noise, then the initial latent."""
        m = self.latent_mask(generate_mask)
        if self.conditioning_channels == 9:
            black = torch.full_like(canvases, -1.0)
            on_refs = generate_mask < 0.5
            refs_only = torch.where(on_refs, canvases, black)
            query_only = torch.where(on_refs, black, canvases)
            # one VAE pass for both images; each page's generator draws its A noise, then its B
            both = self._vae_sample(torch.cat([refs_only, query_only]), [*generators, *generators])
            latent_refs, latent_query = both.chunk(2)
            return assemble_condition(latent_refs, m, latent_query)
        return assemble_condition(self._vae_sample(canvases, generators), m)

    # -- one denoising step --------------------------------------------------------------
    def text_condition(self, batch: int) -> torch.Tensor:
        """(B or 2B, tokens, dim): [uncond; cond] rows under CFG, else the cond rows."""
        cond = self.prompt_embedding(self.options.prompt).expand(batch, -1, -1)
        if not self.uses_cfg:
            return cond
        return torch.cat([self.prompt_embedding(self.options.negative_prompt).expand(batch, -1, -1), cond])

    @property
    def uses_cfg(self) -> bool:
        return self.options.guidance_scale > 1.0

    def guider_adds(self, sample: torch.Tensor, t, condition: torch.Tensor, repeat: int = 1):
        """The guider's (down, mid, up) add-samples for B rows, each repeated `repeat` times
        along the batch (2 under CFG). It has no cross-attention, so its outputs for the uncond
        and cond rows are identical: once per step instead of on the CFG batch."""
        down, mid, up = self.guider(sample, t, condition, self.options.conditioning_scale)
        if repeat == 1:
            return down, mid, up
        again = lambda a: a.repeat(repeat, 1, 1, 1)  # noqa: E731
        return [again(a) for a in down], again(mid), [again(a) for a in up]

    def guided_unet(self, sample: torch.Tensor, t, condition: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
        """UNet noise prediction with the guider's adds, for every text row: (2B,...) under
        CFG ([uncond; cond]), else (B,...). Guider and UNet get the same sample and timestep."""
        repeat = text.shape[0] // sample.shape[0]
        adds = self.guider_adds(sample, t, condition, repeat)
        return self.unet(torch.cat([sample] * repeat), t, text, *adds).sample

    def predict_noise(self, sample: torch.Tensor, t, condition: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
        eps = self.guided_unet(sample, t, condition, text)
        if text.shape[0] == sample.shape[0]:
            return eps
        eps_uncond, eps_cond = eps.chunk(2)
        return cfg_combine(eps_uncond, eps_cond, self.options.guidance_scale)

    def denoise_step(self, latents: torch.Tensor, t, condition: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
        sample = self.scheduler.scale_model_input(latents, t)
        eps = self.predict_noise(sample, t, condition, text)
        return self.scheduler.step(eps, t, latents).prev_sample

    # -- ICP ---------------------------------------------------------------------------
    @torch.no_grad()
    def colorize_canvases(
        self,
        canvases: list[np.ndarray],
        generate_masks: list[np.ndarray],
        seeds: list[int],
        on_step: Callable[[int, torch.Tensor, torch.Tensor], None] | None = None,
    ) -> list[np.ndarray]:
        """canvases: uint8 (2H,2W,3) each, same size; generate_masks: bool/uint8 (2H,2W), true
        where the page is generated. Returns the colorized canvases (uint8, same size).
        on_step(i, t, latents) is called after each scheduler step (tests, previews)."""
        height, width = canvases[0].shape[:2]
        multiple = self.vae_scale * self.unet_scale
        if height % multiple or width % multiple:
            raise ValueError(f"canvas {width}x{height}: sides must be multiples of {multiple}")
        generators = make_generators(seeds)
        images = _to_tensor(canvases, self.device, self.dtype)
        masks = torch.from_numpy(np.stack([np.asarray(m, dtype=bool) for m in generate_masks]).astype(np.float32))
        condition = self.prepare_condition(images, masks[:, None].to(self.device, self.dtype), generators)
        text = self.text_condition(len(canvases))

        self.scheduler.set_timesteps(self.options.steps, device=self.device)
        latent_shape = (len(canvases), self.unet.config.in_channels, height // self.vae_scale, width // self.vae_scale)
        latents = _randn(latent_shape, generators, self.device, self.dtype) * self.scheduler.init_noise_sigma
        for i, t in enumerate(self.scheduler.timesteps):
            latents = self.denoise_step(latents, t, condition, text)
            if on_step is not None:
                on_step(i, t, latents)
        self._maybe_tile_vae((height, width))
        decoded = self.vae.decode((latents / self.vae.config.scaling_factor).to(self.vae_dtype)).sample
        return _to_uint8(decoded)

    # -- GSRP --------------------------------------------------------------------------
    @torch.no_grad()
    def super_resolve(self, color: np.ndarray, gray: np.ndarray, seed: int) -> np.ndarray:
        """color: uint8 (h,w,3) low-res colorization; gray: uint8 (H,W) or (H,W,3) page at the
        target size. Returns uint8 (H,W,3). Pages larger than `gsrp_tile` go tile by tile
        (overlapping tiles, linearly blended). The posterior noise is drawn once for the whole
        page and each tile takes its slice (tiles start on latent pixels), so tiling changes
        the result only near the seams."""
        import cv2

        if self.multires is None:
            raise RuntimeError("GSRP needs MultiResNetModel weights (GraySD/MultiResNetModel.safetensors)")
        height, width = gray.shape[:2]
        gray3 = np.repeat(gray[..., None], 3, axis=2) if gray.ndim == 2 else gray
        color_up = cv2.resize(color, (width, height), interpolation=cv2.INTER_CUBIC)
        scale = self.vae_scale
        latent_hw = (-(-height // scale), -(-width // scale))
        generator = torch.Generator("cpu").manual_seed(int(seed))
        eps = torch.randn((1, self.vae.config.latent_channels, *latent_hw), generator=generator)
        tile, overlap = self.options.gsrp_tile, self.options.gsrp_tile_overlap
        if max(height, width) <= tile:
            return self._gsrp_tile(color_up, gray3, eps)
        out = np.zeros((height, width, 3), np.float32)
        weight = np.zeros((height, width, 1), np.float32)
        for y0, y1 in _tile_spans(height, tile, overlap, scale):
            for x0, x1 in _tile_spans(width, tile, overlap, scale):
                tile_eps = eps[:, :, y0 // scale : -(-y1 // scale), x0 // scale : -(-x1 // scale)]
                piece = self._gsrp_tile(color_up[y0:y1, x0:x1], gray3[y0:y1, x0:x1], tile_eps)
                ramp = _blend_weights(y1 - y0, x1 - x0, overlap)
                out[y0:y1, x0:x1] += piece.astype(np.float32) * ramp
                weight[y0:y1, x0:x1] += ramp
        return np.clip(out / weight + 0.5, 0, 255).astype(np.uint8)

    def _gsrp_tile(self, color: np.ndarray, gray3: np.ndarray, eps: torch.Tensor) -> np.ndarray:
        """One tile; eps: its slice of the page's posterior noise (latent size of the padded tile)."""
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
            eps=eps.to(self.device, self.vae_dtype),
        )
        return _to_uint8(result)[0][:height, :width]


def _tile_spans(length: int, tile: int, overlap: int, align: int) -> list[tuple[int, int]]:
    """(start, end) of the fewest overlapping tiles covering [0, length), evenly spaced:
    starts are multiples of `align` (a tile's latent lines up with the page's), neighbours
    overlap by at least `overlap`, and the last tile runs to the end (up to align-1 pixels
    longer than `tile`)."""
    if length <= tile:
        return [(0, length)]
    room = (length - tile) // align  # in align units
    if room == 0:
        return [(0, length)]
    step = max(1, (tile - overlap) // align)
    gaps = -(-room // step)
    starts = [align * round(i * room / gaps) for i in range(gaps + 1)]
    return [(s, s + tile) for s in starts[:-1]] + [(starts[-1], length)]


def _blend_weights(height: int, width: int, overlap: int) -> np.ndarray:
    def ramp(n):
        r = np.ones(n, np.float32)
        k = min(overlap, n // 2)
        if k > 0:
            edge = (np.arange(k, dtype=np.float32) + 1) / (k + 1)
            r[:k], r[-k:] = edge, edge[::-1]
        return r

    return (ramp(height)[:, None] * ramp(width)[None, :])[..., None]
