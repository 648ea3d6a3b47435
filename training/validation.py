"""Validation: colorize held-back pages with a checkpoint through the inference code and
score them with the evaluation metrics (models/metrics.py: PSNR, SSIM, flat-color accuracy).

train-colorizer: the `diffusion` backend (DiffusionColorizer) is built from the config with
`colorize.weights=<checkpoint>`, exactly as `chromaflow colorize` would; the page's stored
reference patches are its canvas. train-guided-sr: GSRP (models/colorflow/gsrp.py) with the
checkpoint's MultiResNetModel on the page's gray + its downscaled color, against bicubic.
Writes RUN_DIR/validation/step-XXXXXX/{metrics.json, <key>.png}.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path

import cv2
import numpy as np

from chromaflow.conf import Config
from chromaflow.models.metrics import flat_color_accuracy, psnr, ssim
from chromaflow.storage.atomic import write_bytes, write_json
from chromaflow.storage.images import encode_png

from .dataset import ShardReader, TrainPage, open_training_set
from .report import VALIDATION_DIR

log = logging.getLogger(__name__)


def scores(pred: np.ndarray, truth: np.ndarray, lines: np.ndarray) -> dict[str, float | None]:
    fg, _ = flat_color_accuracy(pred, truth, lines)
    return {"psnr": psnr(pred, truth), "ssim": ssim(pred, truth), "flat_color_accuracy": None if math.isnan(fg) else fg}


def validation_pages(data_dir: Path, count: int) -> list[TrainPage]:
    shards = open_training_set(data_dir).shards("validation")
    if not shards:
        return []
    reader = ShardReader(shards)
    return [reader.page(i) for i in range(min(count, len(reader)))]


def _colorizer(checkpoint: Path, sd15: Path, config: Config):
    from chromaflow.models.colorflow.backend import DiffusionColorizer

    data = config.model_dump(mode="json")
    data["colorize"].update(backend="diffusion", weights=str(checkpoint))
    data["colorize"]["diffusion"]["sd15_path"] = str(sd15)
    return DiffusionColorizer.from_config(Config.model_validate(data))


def colorize_pages(checkpoint: Path, sd15: Path, config: Config, pages: list[TrainPage]) -> list[np.ndarray]:
    from chromaflow.models.colorizers.base import ColorizeRequest

    colorizer = _colorizer(checkpoint, sd15, config)
    outputs = []
    for page in pages:
        request = ColorizeRequest(key=page.key, page=np.repeat(page.gray[..., None], 3, axis=2), lines=page.lines,
                                  kind="gray", quadrant_patches=[q[:3] for q in page.patches])
        outputs.append(colorizer.colorize(request))
    return outputs


def super_resolve_pages(checkpoint: Path, sd15: Path, config: Config, pages: list[TrainPage]) -> list[np.ndarray]:
    import torch

    from chromaflow.models.colorflow.gsrp import guided_super_resolution

    from .base import load_base, load_multires
    from .guided_sr import GuidedSRModule, low_resolution_size

    device = "cuda" if torch.cuda.is_available() else "cpu"
    vae = load_base(sd15).vae.to(device).eval()
    multires = load_multires(checkpoint / "GraySD", vae).to(device).eval()
    module = GuidedSRModule(vae, multires, config.train.gsrp_vae_roundtrip)
    outputs = []
    with torch.no_grad():
        for page in pages:
            height, width = (s // 8 * 8 for s in page.gray.shape)
            color, gray = page.color[:height, :width], page.gray[:height, :width]
            low_w, low_h = low_resolution_size(width, config.train.gsrp_scale), low_resolution_size(height, config.train.gsrp_scale)
            low = cv2.resize(color, (low_w, low_h), interpolation=cv2.INTER_AREA)
            as_tensor = lambda a: (torch.from_numpy(np.ascontiguousarray(a)).permute(2, 0, 1)[None].float() / 127.5 - 1).to(device)  # noqa: E731
            gray3 = as_tensor(np.repeat(gray[..., None], 3, axis=2))
            up, _, _, _ = module.inputs(gray3, as_tensor(low))
            out = guided_super_resolution(vae, multires, up.clamp(-1, 1), gray3, generator=torch.Generator(device).manual_seed(0))
            outputs.append(((out[0].permute(1, 2, 0).float().cpu().numpy() + 1) * 127.5).round().clip(0, 255).astype(np.uint8))
    return outputs


def validate_checkpoint(kind: str, checkpoint: Path, step: int, sd15: Path, data_dir: Path, run_dir: Path,
                        config: Config) -> dict:
    pages = validation_pages(data_dir, config.train.validation_pages)
    if not pages:
        log.warning("%s: no validation split; validation skipped", data_dir)
        return {}
    run = colorize_pages if kind == "colorizer" else super_resolve_pages
    outputs = run(checkpoint, sd15, config, pages)
    out_dir = Path(run_dir) / VALIDATION_DIR / f"step-{step:06d}"
    per_page = {}
    for page, pred in zip(pages, outputs):
        truth, lines = page.color[:pred.shape[0], :pred.shape[1]], page.lines[:pred.shape[0], :pred.shape[1]]
        per_page[page.key] = scores(pred, truth, lines)
        write_bytes(out_dir / f"{page.key}.png", encode_png(pred))
        write_bytes(out_dir / f"{page.key}.truth.png", encode_png(truth))
    summary = {"step": step, "checkpoint": str(checkpoint), "pages": per_page,
               "mean": {k: _mean([v[k] for v in per_page.values()]) for k in ("psnr", "ssim", "flat_color_accuracy")}}
    write_json(out_dir / "metrics.json", summary)
    log.info("validation at step %d: %s", step, summary["mean"])
    return summary


def _mean(values: list) -> float | None:
    values = [v for v in values if v is not None]
    return float(np.mean(values)) if values else None
