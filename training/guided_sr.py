"""train-guided-sr: GSRP's fusion module (MultiHiddenResNetModel), ColorFlow section 3.3.

Per sample: a random high-resolution crop of the colored page and of its gray page; the
low-resolution color input is the crop scaled by `train.gsrp_scale` (optionally passed
through the frozen VAE, like the ICP output it stands for at inference). Per step: the
inference GSRP path (models/colorflow/gsrp.py) — both images through the VAE encoder with
hidden states, fused, added into the decoder while it decodes the color latent — and the
L1 between the decoded image and the high-resolution color crop. Only the fusion module
trains; the VAE is frozen (gradients flow through its decoder into the fusion outputs).
"""

from __future__ import annotations

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from chromaflow.models.colorflow.gsrp import decode_with_hidden, encode_with_hidden

from .colorizer import _to_tensor
from .dataset import ShardReader
from .sampling import SampleOrder, sample_rng

VAE_SCALE = 8


def low_resolution_size(crop: int, scale: float) -> int:
    return max(VAE_SCALE, int(round(crop * scale / VAE_SCALE)) * VAE_SCALE)


class GuidedSRSamples(torch.utils.data.Dataset):
    def __init__(self, reader: ShardReader, order: SampleOrder, train_cfg):
        self.reader, self.order, self.cfg = reader, order, train_cfg
        self.crop = train_cfg.gsrp_crop // VAE_SCALE * VAE_SCALE

    def __len__(self) -> int:
        return 2**62

    def __getitem__(self, c: int) -> dict[str, torch.Tensor]:
        page = self.reader.page(self.order.index(c))
        rng = sample_rng(self.order.seed, self.order.rank, c, "gsrp")
        color, gray = page.color, page.gray
        height, width = gray.shape
        if min(height, width) < self.crop:  # small pages are enlarged so every crop has one size
            factor = self.crop / min(height, width)
            size = (max(self.crop, round(width * factor)), max(self.crop, round(height * factor)))
            color, gray = cv2.resize(color, size, cv2.INTER_CUBIC), cv2.resize(gray, size, cv2.INTER_CUBIC)
            height, width = gray.shape
        y0 = int(rng.integers(0, height - self.crop + 1))
        x0 = int(rng.integers(0, width - self.crop + 1))
        hr_color = color[y0:y0 + self.crop, x0:x0 + self.crop]
        hr_gray = np.repeat(gray[y0:y0 + self.crop, x0:x0 + self.crop, None], 3, axis=2)
        low = low_resolution_size(self.crop, self.cfg.gsrp_scale)
        low_color = cv2.resize(hr_color, (low, low), interpolation=cv2.INTER_AREA)
        return {"hr_color": _to_tensor(hr_color), "hr_gray": _to_tensor(hr_gray), "low_color": _to_tensor(low_color)}


class GuidedSRModule(nn.Module):
    def __init__(self, vae, multires, vae_roundtrip: bool):
        super().__init__()
        self.vae, self.multires, self.vae_roundtrip = vae, multires, vae_roundtrip

    def inputs(self, hr_gray, low_color):
        """Upsampled color (bicubic, as the pipeline does) and the encoder's hidden states."""
        with torch.no_grad():
            dtype = next(self.vae.parameters()).dtype
            if self.vae_roundtrip:
                latent = self.vae.encode(low_color.to(dtype)).latent_dist.mode()
                low_color = self.vae.decode(latent).sample.clamp(-1, 1)
            up = F.interpolate(low_color.float(), size=hr_gray.shape[-2:], mode="bicubic", align_corners=False)
            hidden, mean, logvar = encode_with_hidden(self.vae, torch.cat([up.clamp(-1, 1), hr_gray]).to(dtype))
        return up, hidden, mean, logvar

    def forward(self, hr_color, hr_gray, low_color, generator: torch.Generator) -> torch.Tensor:
        batch = hr_color.shape[0]
        _, hidden, mean, logvar = self.inputs(hr_gray, low_color)
        fused = self.multires([h[:batch] for h in hidden], [h[batch:] for h in hidden])
        eps = torch.randn(mean[:batch].shape, generator=generator).to(mean)
        z = mean[:batch] + torch.exp(0.5 * logvar[:batch]) * eps  # posterior sample, as at inference
        decoded = decode_with_hidden(self.vae, z, fused)
        return F.l1_loss(decoded.float(), hr_color.float())  # ColorFlow eq. 6

    def trainable_state(self) -> dict[str, dict[str, torch.Tensor]]:
        return {"MultiResNetModel.safetensors": self.multires.state_dict()}

    def load_trainable(self, files: dict[str, dict[str, torch.Tensor]], source: str) -> None:
        from chromaflow.models.colorflow.weights import load_state_dict_checked

        load_state_dict_checked(self.multires, files["MultiResNetModel.safetensors"], f"{source} MultiResNetModel")

    def graysd_configs(self) -> dict[str, dict]:
        return {}
