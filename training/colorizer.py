"""train-colorizer: ColorGuider + UNet LoRA on ColorFlow's ICP objective (paper eq. 4).

Per sample (CPU, `ColorizerSamples`): the query (gray page, its screenstyle variant or its
line art) and the colored page are each placed in the 2W x 2H canvas with the page's 12
reference patches (models/colorflow/canvas.py, the same layout inference uses); a random crop that
always holds the whole query (patch-wise training) is cut from both, with the mask, and
downsampled. Per step (`ColorizerModule.forward`): z0 = VAE(colored canvas), the 9/5-channel
condition as the inference pipeline builds it, t from the shifted schedule (eq. 5), and the
epsilon-prediction MSE of the LoRA'd UNet driven by the guider's add-samples.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from chromaflow.models.colorflow.canvas import build_canvas

from .augment import crop_output_size, patch_crop_box
from .dataset import ShardReader, TrainPage
from .sampling import SampleOrder, sample_rng

REFS_ON_CANVAS = 3  # ColorFlow's canvas holds the top-3 patches per quadrant


def shifted_timesteps(u: torch.Tensor, num_train_timesteps: int, mu: float) -> torch.Tensor:
    """ColorFlow eq. 5: t' = e^mu / (e^mu + (T/t - 1)) * T for t = u * T, u in (0, 1];
    returned as integer indices 0..T-1 of the discrete schedule."""
    T = float(num_train_timesteps)
    t = u.double().clamp(min=1e-12) * T
    shifted = math.exp(mu) / (math.exp(mu) + (T / t - 1.0)) * T
    return (torch.ceil(shifted) - 1).clamp(0, num_train_timesteps - 1).long()


def parse_size(value: str) -> tuple[int, int]:
    width, height = (int(v) for v in value.lower().split("x"))
    return width, height


class ColorizerSamples(torch.utils.data.Dataset):
    """Sample c of this worker's stream -> canvas tensors; a pure function of (seed, rank, c)."""

    def __init__(self, reader: ShardReader, order: SampleOrder, train_cfg, input_style: str):
        self.reader, self.order, self.cfg, self.input_style = reader, order, train_cfg, input_style
        self.query_size = parse_size(train_cfg.query_size)

    def __len__(self) -> int:
        return 2**62  # an endless stream; the sampler picks the range of a run

    def query(self, page: TrainPage, rng: np.random.Generator) -> np.ndarray:
        if self.input_style == "sketch":
            return page.lines
        return page.screen if rng.random() < self.cfg.screenstyle_prob else page.gray

    def patches(self, page: TrainPage, rng: np.random.Generator) -> list[list[np.ndarray]]:
        """3 patches per quadrant, best first; with more stored, 3 of them drawn (rank kept)."""
        chosen = []
        for q, stored in enumerate(page.patches):
            picks = sorted(rng.choice(len(stored), size=min(REFS_ON_CANVAS, len(stored)), replace=False))
            row = []
            for i in picks:
                shuffled = page.shuffled is not None and rng.random() < self.cfg.shuffled_reference_prob
                row.append(page.shuffled[q][i] if shuffled else stored[i])
            chosen.append(row)
        return chosen

    def __getitem__(self, c: int) -> dict[str, torch.Tensor]:
        index = self.order.index(c)
        page = self.reader.page(index)
        rng = sample_rng(self.order.seed, self.order.rank, c)
        patches = self.patches(page, rng)
        bw = build_canvas(self.query(page, rng), patches, size=self.query_size)
        color = build_canvas(page.color, patches, size=self.query_size)
        # one context share per micro-batch (all its crops have one size), positions per sample
        batch_rng = sample_rng(self.order.seed, self.order.rank, c // self.cfg.batch_size, "batch")
        context = batch_rng.uniform(*self.cfg.crop_context)
        canvas_h, canvas_w = bw.image.shape[:2]
        x0, y0, x1, y1 = patch_crop_box((canvas_w, canvas_h), bw.query_box, context, rng)
        size = crop_output_size(x1 - x0, y1 - y0, self.cfg.crop_downsample)

        def cut(image: np.ndarray, interpolation: int) -> np.ndarray:
            import cv2

            return cv2.resize(image[y0:y1, x0:x1], size, interpolation=interpolation)

        import cv2

        generate = (cut(bw.mask, cv2.INTER_NEAREST) == 0).astype(np.float32)
        return {"color": _to_tensor(cut(color.image, cv2.INTER_AREA)), "bw": _to_tensor(cut(bw.image, cv2.INTER_AREA)),
                "generate": torch.from_numpy(generate)[None]}


def _to_tensor(rgb: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(rgb)).permute(2, 0, 1).float() / 127.5 - 1.0


def posterior_sample(vae, images: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
    """Scaled VAE posterior sample (mean + std * eps) * scaling_factor, as the pipeline does."""
    dist = vae.encode(images.to(next(vae.parameters()).dtype)).latent_dist
    return (dist.mean + dist.std * eps.to(dist.mean)) * vae.config.scaling_factor


def condition_from_latents(latent_refs: torch.Tensor, latent_query: torch.Tensor | None, keep: torch.Tensor,
                           channels: int) -> torch.Tensor:
    """[VAE(refs only), m, VAE(query only)] (9 ch) or [VAE(canvas), m] (5 ch); m = bilinear `keep`."""
    m = F.interpolate(keep, size=latent_refs.shape[-2:], mode="bilinear", align_corners=False).to(latent_refs)
    if channels == 9:
        return torch.cat([latent_refs, m, latent_query], 1)
    return torch.cat([latent_refs, m], 1)


class ColorizerModule(nn.Module):
    """Everything one step touches; only the guider and the LoRA have trainable weights."""

    def __init__(self, base, guider, prompt_embedding: torch.Tensor, timestep_shift: float):
        super().__init__()
        self.unet, self.guider, self.vae = base.unet, guider, base.vae
        self.register_buffer("text", prompt_embedding, persistent=False)
        self.register_buffer("alphas_cumprod", base.noise_scheduler.alphas_cumprod.clone().float(), persistent=False)
        self.num_train_timesteps = int(base.noise_scheduler.config.num_train_timesteps)
        self.timestep_shift = timestep_shift
        self.channels = int(guider.config.conditioning_channels)

    def encode(self, color, bw, generate, generator: torch.Generator):
        """z0 and the condition (no gradients: the VAE is frozen)."""
        keep = 1.0 - generate
        black = torch.full_like(bw, -1.0)
        if self.channels == 9:
            images = torch.cat([color, torch.where(keep > 0.5, bw, black), torch.where(keep > 0.5, black, bw)])
        else:
            images = torch.cat([color, bw])
        with torch.no_grad():
            shape = (images.shape[0], self.vae.config.latent_channels,
                     images.shape[-2] // 8, images.shape[-1] // 8)
            eps = torch.randn(shape, generator=generator).to(images.device)
            latents = posterior_sample(self.vae, images, eps)
        parts = latents.float().chunk(3 if self.channels == 9 else 2)  # latents and targets stay float32 under autocast
        query = parts[2] if self.channels == 9 else None
        return parts[0], condition_from_latents(parts[1], query, keep, self.channels)

    def forward(self, color, bw, generate, generator: torch.Generator) -> torch.Tensor:
        z0, condition = self.encode(color, bw, generate, generator)
        batch = z0.shape[0]
        t = shifted_timesteps(torch.rand(batch, generator=generator, dtype=torch.float64),
                              self.num_train_timesteps, self.timestep_shift).to(z0.device)
        noise = torch.randn(z0.shape, generator=generator).to(z0)
        abar = self.alphas_cumprod[t].view(-1, 1, 1, 1).to(z0)
        noisy = abar.sqrt() * z0 + (1 - abar).sqrt() * noise  # DDPM forward process
        down, mid, up = self.guider(noisy, t, condition.to(noisy.dtype), 1.0)
        text = self.text.expand(batch, -1, -1).to(noisy.dtype)
        pred = self.unet(noisy, t, text, down, mid, up).sample
        return F.mse_loss(pred.float(), noise.float())

    def trainable_state(self) -> dict[str, dict[str, torch.Tensor]]:
        """GraySD file -> tensors, in the release's key layout."""
        lora = {k: v for k, v in self.unet.state_dict().items() if ".lora_" in k}
        return {"diffusion_pytorch_model.safetensors": self.guider.state_dict(), "unet_lora.safetensors": lora}

    def load_trainable(self, files: dict[str, dict[str, torch.Tensor]], source: str) -> None:
        from chromaflow.models.colorflow.lora import load_lora_weights
        from chromaflow.models.colorflow.weights import load_state_dict_checked

        load_state_dict_checked(self.guider, files["diffusion_pytorch_model.safetensors"], f"{source} guider")
        load_lora_weights(self.unet, files["unet_lora.safetensors"], f"{source} LoRA")

    def graysd_configs(self) -> dict[str, dict]:
        config = dict(self.guider.config)
        config["_class_name"] = "ColorGuiderSDModel"  # as the release's GraySD/config.json
        return {"config.json": {k: list(v) if isinstance(v, tuple) else v for k, v in config.items()}}
