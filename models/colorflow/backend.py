"""The `diffusion` colorizer backend: ColorFlow ICP + GSRP behind the Colorizer contract.

Per page: the query (page luminance, or the line art with input_style sketch) is resized to
the model resolution W x H, placed in the centre of a 2W x 2H canvas whose border holds the
retrieved references' patches; ICP colorizes the canvas; the centre is cropped and brought
to the request's page size by GSRP (guided by the gray page at that size; tiled when large)
when MultiResNetModel weights are present, else resized bicubically. The request page is
the only high-res input this stage has (colorize.work_size); the pipeline's upscale stage
restores the original page size afterwards.

Torch/diffusers are imported only when this backend is built.
"""

from __future__ import annotations

import logging
import zlib

import cv2
import numpy as np

from chromaflow.models.colorizers.base import ColorizeRequest, Reference

from chromaflow.models.patches import crop, quadrant_boxes

from .canvas import build_canvas

log = logging.getLogger(__name__)

OFFICIAL_RESOLUTIONS = ((640, 640), (512, 800), (800, 512))  # W x H, as in ColorFlow's app
_SIZE_MULTIPLE = 32  # canvas 2W must be a multiple of 64 = VAE 8 x UNet 8


def parse_resolution(value: str) -> tuple[int, int] | None:
    if value == "auto":
        return None
    try:
        width, height = (int(v) for v in value.lower().split("x"))
    except ValueError:
        raise ValueError(f"colorize.diffusion.resolution: expected 'auto' or 'WxH', got {value!r}") from None
    if width % _SIZE_MULTIPLE or height % _SIZE_MULTIPLE or width <= 0 or height <= 0:
        raise ValueError(f"colorize.diffusion.resolution: {value} must be positive multiples of {_SIZE_MULTIPLE}")
    return width, height


def pick_resolution(page_width: int, page_height: int, fixed: tuple[int, int] | None) -> tuple[int, int]:
    """The fixed WxH, else the official resolution closest in aspect ratio."""
    if fixed is not None:
        return fixed
    aspect = np.log(page_width / page_height)
    return min(OFFICIAL_RESOLUTIONS, key=lambda wh: abs(np.log(wh[0] / wh[1]) - aspect))


def quadrant_patches(references: list[Reference], top_k: int = 3) -> list[list[np.ndarray]]:
    """Per query quadrant, the same quadrant's crop of the top_k references (by score).

    Used when the request carries no per-quadrant retrieval result (`quadrant_patches`)."""
    ranked = sorted(references, key=lambda r: -r.score)[:top_k]
    patches: list[list[np.ndarray]] = [[] for _ in range(4)]
    for ref in ranked:
        height, width = ref.color.shape[:2]
        for q, box in enumerate(quadrant_boxes(width, height)):
            patches[q].append(crop(ref.color, box))
    return patches


def page_seed(base_seed: int, key: str) -> int:
    """Per-page seed: stable across runs and independent of which pages share a batch."""
    return (base_seed + zlib.crc32(key.encode("utf-8"))) % (2**31)


class DiffusionColorizer:
    name = "diffusion"

    def __init__(self, pipeline, settings, work_size: int = 1024):
        self.pipeline = pipeline
        self.settings = settings  # DiffusionConfig
        self.fixed_resolution = parse_resolution(settings.resolution)
        self.work_size = work_size

    @classmethod
    def from_config(cls, config) -> "DiffusionColorizer":
        import torch

        from .pipeline import ColorFlowPipeline, PipelineOptions
        from .weights import load_colorflow

        s = config.colorize.diffusion
        if not s.colorflow_path or not s.sd15_path:
            raise ValueError(
                "colorize.backend=diffusion needs colorize.diffusion.colorflow_path and colorize.diffusion.sd15_path "
                "(local folders; see docs/diffusion.md)"
            )
        parse_resolution(s.resolution)
        device = ("cuda" if torch.cuda.is_available() else "cpu") if s.device == "auto" else s.device
        if s.dtype == "auto":
            dtype = torch.bfloat16 if device.startswith("cuda") else torch.float32
        else:
            dtype = getattr(torch, s.dtype)
        components = load_colorflow(s.colorflow_path, s.sd15_path, merge_lora=s.merge_lora, use_gsrp=s.gsrp)
        channels = int(components.guider.config.conditioning_channels)
        if s.conditioning_channels != "auto" and int(s.conditioning_channels) != channels:
            raise ValueError(
                f"colorize.diffusion.conditioning_channels={s.conditioning_channels} but "
                f"{s.colorflow_path}/GraySD/config.json says {channels}"
            )
        options = PipelineOptions(
            steps=s.steps,
            guidance_scale=s.guidance_scale,
            conditioning_scale=s.conditioning_scale,
            prompt=s.prompt,
            negative_prompt=s.negative_prompt,
            gsrp_tile=s.gsrp_tile,
            gsrp_tile_overlap=s.gsrp_tile_overlap,
        )
        pipeline = ColorFlowPipeline.from_components(
            components,
            device=device,
            dtype=dtype,
            channels_last=s.channels_last and device.startswith("cuda"),
            torch_compile=s.torch_compile,
            options=options,
        )
        log.info(
            "diffusion backend: %s %s, %d steps, CFG %.1f, %d-channel guider, GSRP %s",
            device, str(dtype).replace("torch.", ""), s.steps, s.guidance_scale, channels,
            "on" if components.multires is not None else "off",
        )
        return cls(pipeline, s, config.colorize.work_size)

    # -- contract ----------------------------------------------------------------------
    # The colorize stage hands over this many pages at once and loads the retrieved
    # per-quadrant patches for the canvas.
    uses_quadrant_patches = True

    @property
    def batch_pages(self) -> int:
        return int(self.settings.batch_pages)

    def colorize(self, request: ColorizeRequest) -> np.ndarray:
        return self.colorize_batch([request])[0]

    def colorize_batch(self, requests: list[ColorizeRequest]) -> list[np.ndarray]:
        """Several pages per forward pass (up to batch_pages, grouped by model resolution)."""
        results: dict[int, np.ndarray] = {}
        prepared = [self._prepare(r) for r in requests]
        groups: dict[tuple[int, int], list[int]] = {}
        for i, item in enumerate(prepared):
            groups.setdefault(item["resolution"], []).append(i)
        for indices in groups.values():
            for start in range(0, len(indices), self.settings.batch_pages):
                chunk = indices[start : start + self.settings.batch_pages]
                canvases = self.pipeline.colorize_canvases(
                    [prepared[i]["canvas"].image for i in chunk],
                    [prepared[i]["canvas"].mask == 0 for i in chunk],
                    [prepared[i]["seed"] for i in chunk],
                )
                for i, out in zip(chunk, canvases):
                    results[i] = self._finish(requests[i], prepared[i], out)
        return [results[i] for i in range(len(requests))]

    # -- steps -------------------------------------------------------------------------
    def query_image(self, request: ColorizeRequest) -> np.ndarray:
        """Single-channel query at page size: luminance, or line art for sketch input."""
        if self.settings.input_style == "sketch":
            return request.lines
        return cv2.cvtColor(request.page, cv2.COLOR_RGB2GRAY)

    def _prepare(self, request: ColorizeRequest) -> dict:
        height, width = request.lines.shape[:2]
        res_w, res_h = pick_resolution(width, height, self.fixed_resolution)
        gray = self.query_image(request)
        patches = getattr(request, "quadrant_patches", None) or quadrant_patches(request.references)
        canvas = build_canvas(gray, patches, size=(res_w, res_h))
        return {
            "resolution": (res_w, res_h),
            "canvas": canvas,
            "gray": gray,
            "seed": page_seed(self.settings.seed, request.key),
        }

    def _finish(self, request: ColorizeRequest, prepared: dict, canvas_out: np.ndarray) -> np.ndarray:
        x0, y0, x1, y1 = prepared["canvas"].query_box
        color = canvas_out[y0:y1, x0:x1]
        height, width = request.lines.shape[:2]
        if self.pipeline.multires is not None:
            return self.pipeline.super_resolve(color, prepared["gray"], prepared["seed"])
        return cv2.resize(color, (width, height), interpolation=cv2.INTER_CUBIC)
