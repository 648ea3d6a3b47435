"""CLIP image embedder (`retrieval.backend: clip`), from local weights only.

`retrieval.clip_checkpoint` may be:

- a Hugging Face `CLIPVisionModelWithProjection` folder (config.json + weights), or a
  folder holding one as `image_encoder/` (ColorFlow's release layout);
- an open_clip folder with `open_clip_config.json` (loaded as `local-dir:`);
- an open_clip checkpoint file (.pt/.bin/.safetensors) for the architecture named by
  `retrieval.clip_arch`: a built-in open_clip model name or a path to a model-config JSON.

Nothing is ever downloaded: paths must exist, HF loading uses local_files_only.
Like ColorFlow, references are embedded in color and the page as it is (gray/line art).
Patches are resized to the model's square input without cropping (a 3/4 crop of a tall
page would otherwise lose its top and bottom), normalised with the model's mean/std,
and embedded in batches of `clip_batch_size`, in fp16 on GPU by default.
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path

import cv2
import numpy as np

log = logging.getLogger(__name__)

OPENAI_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_STD = (0.26862954, 0.26130258, 0.27577711)
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth")


class ClipLoadError(ValueError):
    """The CLIP checkpoint cannot be used; str() is one line naming the path."""


def _file_fingerprint(path: Path) -> str:
    """Cheap but content-based: size + first and last MiB (weights files are GBs)."""
    size = path.stat().st_size
    digest = hashlib.sha256(str(size).encode())
    with open(path, "rb") as f:
        digest.update(f.read(1 << 20))
        if size > 2 << 20:
            f.seek(-(1 << 20), 2)
            digest.update(f.read(1 << 20))
    return digest.hexdigest()


def _folder_fingerprint(folder: Path) -> str:
    digest = hashlib.sha256()
    for path in sorted(folder.iterdir()):
        if path.is_file() and (path.suffix in WEIGHT_SUFFIXES or path.suffix == ".json"):
            digest.update(path.name.encode())
            digest.update(_file_fingerprint(path).encode())
    return digest.hexdigest()


def _hf_vision_folder(path: Path) -> Path | None:
    for folder in (path, path / "image_encoder"):
        config = folder / "config.json"
        if config.is_file():
            try:
                data = json.loads(config.read_text(encoding="utf-8"))
            except ValueError:
                continue
            if data.get("model_type") in ("clip_vision_model", "clip") or any(
                    "CLIPVision" in a for a in data.get("architectures") or []):
                return folder
    return None


def _resolve_device(device: str):
    import torch

    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ClipLoadError(f"retrieval.device={device} but no CUDA device is available")
    return torch.device(device)


def _resolve_dtype(precision: str, device):
    import torch

    if precision == "auto":
        return torch.float16 if device.type == "cuda" else torch.float32
    return {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}[precision]


class ClipEmbedder:
    name = "clip"
    version = "1"
    domain = "rgb"

    def __init__(self, encode, dim: int, image_size: int, mean, std, signature: str, device, dtype,
                 batch_size: int = 64):
        self._encode = encode  # torch float tensor (B, 3, S, S) -> (B, dim)
        self.dim = int(dim)
        self.image_size = int(image_size)
        self.mean = np.asarray(mean, np.float32).reshape(1, 1, 3)
        self.std = np.asarray(std, np.float32).reshape(1, 1, 3)
        self._signature = signature
        self.device = device
        self.dtype = dtype
        self.batch_size = batch_size

    @property
    def signature(self) -> str:
        return self._signature

    # ------------------------------------------------------------------ loading
    @classmethod
    def from_config(cls, cfg) -> "ClipEmbedder":
        if not cfg.clip_checkpoint:
            raise ClipLoadError("retrieval.backend=clip needs retrieval.clip_checkpoint (a local file or folder); "
                                "weights are never downloaded")
        path = Path(cfg.clip_checkpoint).expanduser().resolve()
        if not path.exists():
            raise ClipLoadError(f"{path}: CLIP checkpoint does not exist (retrieval.clip_checkpoint)")
        device = _resolve_device(cfg.device)
        dtype = _resolve_dtype(cfg.clip_precision, device)
        if path.is_dir():
            hf_folder = _hf_vision_folder(path)
            if hf_folder is not None:
                return cls._from_hf(hf_folder, device, dtype, cfg.clip_batch_size)
            if (path / "open_clip_config.json").is_file():
                return cls._from_open_clip(f"local-dir:{path}", None, path, device, dtype, cfg.clip_batch_size)
            raise ClipLoadError(f"{path}: neither a CLIPVisionModelWithProjection folder (config.json, image_encoder/) "
                                f"nor an open_clip folder (open_clip_config.json)")
        if path.suffix not in WEIGHT_SUFFIXES:
            raise ClipLoadError(f"{path}: expected a .safetensors/.bin/.pt checkpoint or a folder")
        return cls._from_open_clip(cfg.clip_arch, str(path), path, device, dtype, cfg.clip_batch_size)

    @classmethod
    def _from_open_clip(cls, arch: str, weights: str | None, path: Path, device, dtype, batch_size: int):
        import open_clip
        import torch

        model_name = arch
        arch_path = Path(arch)
        if arch.endswith(".json"):
            if not arch_path.is_file():
                raise ClipLoadError(f"{arch_path}: open_clip model config (retrieval.clip_arch) does not exist")
            open_clip.add_model_config(arch_path)
            model_name = arch_path.stem
        elif not arch.startswith("local-dir:") and model_name not in open_clip.list_models():
            raise ClipLoadError(f"{path}: unknown open_clip architecture {arch!r} (retrieval.clip_arch); "
                                f"use a built-in name or a model-config .json path")
        try:
            model = open_clip.create_model(model_name, pretrained=weights, device="cpu", load_weights=True,
                                           weights_only=True, require_pretrained=True)
        except Exception as exc:  # open_clip raises several types for bad checkpoints
            raise ClipLoadError(f"{path}: cannot load open_clip model {model_name} ({type(exc).__name__}: {exc})") \
                from None
        visual = model.visual.to(device=device, dtype=dtype).eval()
        size = visual.image_size
        size = size[0] if isinstance(size, (tuple, list)) else size
        mean = getattr(visual, "image_mean", None) or OPENAI_MEAN
        std = getattr(visual, "image_std", None) or OPENAI_STD
        with torch.no_grad():
            dim = visual(torch.zeros(1, 3, size, size, device=device, dtype=dtype)).shape[-1]
        fingerprint = _folder_fingerprint(path) if path.is_dir() else _file_fingerprint(path)
        arch_id = model_name if not arch.endswith(".json") else f"{model_name}:{_file_fingerprint(arch_path)[:12]}"
        signature = f"clip-v{cls.version}-openclip-{arch_id}-{fingerprint[:16]}"
        return cls(lambda x: visual(x), dim, size, mean, std, signature, device, dtype, batch_size)

    @classmethod
    def _from_hf(cls, folder: Path, device, dtype, batch_size: int):
        from transformers import CLIPVisionModelWithProjection

        try:
            model = CLIPVisionModelWithProjection.from_pretrained(str(folder), local_files_only=True,
                                                                  torch_dtype=dtype)
        except Exception as exc:
            raise ClipLoadError(f"{folder}: cannot load CLIPVisionModelWithProjection ({type(exc).__name__}: {exc})") \
                from None
        model = model.to(device).eval()
        size = model.config.image_size
        mean, std = OPENAI_MEAN, OPENAI_STD
        processor = folder / "preprocessor_config.json"
        if processor.is_file():
            data = json.loads(processor.read_text(encoding="utf-8"))
            mean, std = data.get("image_mean", mean), data.get("image_std", std)
        signature = f"clip-v{cls.version}-hf-{_folder_fingerprint(folder)[:16]}"
        return cls(lambda x: model(pixel_values=x).image_embeds, model.config.projection_dim, size, mean, std,
                   signature, device, dtype, batch_size)

    # ------------------------------------------------------------------ embedding
    def _prepare(self, patch: np.ndarray) -> np.ndarray:
        if patch.ndim == 2:
            patch = cv2.cvtColor(patch, cv2.COLOR_GRAY2RGB)
        interp = cv2.INTER_AREA if min(patch.shape[:2]) > self.image_size else cv2.INTER_CUBIC
        resized = cv2.resize(patch, (self.image_size, self.image_size), interpolation=interp)
        return ((resized.astype(np.float32) / 255.0 - self.mean) / self.std).transpose(2, 0, 1)

    def embed(self, patches: list[np.ndarray]) -> np.ndarray:
        import torch

        if not patches:
            return np.zeros((0, self.dim), np.float32)
        out = []
        with torch.inference_mode():
            for start in range(0, len(patches), self.batch_size):
                batch = np.stack([self._prepare(p) for p in patches[start:start + self.batch_size]])
                x = torch.from_numpy(batch).to(device=self.device, dtype=self.dtype)
                emb = self._encode(x).float()
                emb = emb / emb.norm(dim=-1, keepdim=True).clamp_min(1e-12)
                out.append(emb.cpu().numpy())
        return np.concatenate(out).astype(np.float32)
