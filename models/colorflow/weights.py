"""Loading ColorFlow's release folder + a local SD1.5 diffusers folder, with strict key reports.

Expected layout (paths come from config; nothing is downloaded):

    <colorflow_root>/
        image_encoder/                 (CLIP vision model; used by retrieval, only checked here)
        GraySD/config.json             ColorGuider config (ColorGuiderSDModel)
        GraySD/diffusion_pytorch_model.safetensors
        GraySD/unet_lora.safetensors
        GraySD/MultiResNetModel.safetensors      (optional: without it, no GSRP)
    <sd15_root>/ unet/ vae/ text_encoder/ tokenizer/ scheduler/   (diffusers layout)

The release ships pickled `.bin` files; they are converted once with
`chromaflow convert-weights SRC DST` (convert.py). Here only safetensors are read: a folder
that only has the `.bin` gets an error telling you to convert it.

Every load goes through `load_state_dict_checked`: it counts matched / missing / unexpected /
shape-mismatched keys and raises `WeightsError` naming the file and the first few offenders
(the official code uses strict=False, which silently loads nothing when names differ).
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

log = logging.getLogger(__name__)

WEIGHT_SUFFIXES = (".safetensors",)
PICKLE_SUFFIXES = (".bin", ".pth", ".pt", ".ckpt")
_SHOW = 5


class WeightsError(ValueError):
    """A weights file or folder does not match what the model expects (one line)."""


@dataclass
class LoadReport:
    source: str
    matched: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    mismatched: list[str] = field(default_factory=list)  # "key: file shape vs model shape"

    @property
    def ok(self) -> bool:
        return not (self.missing or self.unexpected or self.mismatched)

    def summary(self) -> str:
        return (
            f"{self.source}: {len(self.matched)} matched, {len(self.missing)} missing, "
            f"{len(self.unexpected)} unexpected, {len(self.mismatched)} shape-mismatched"
        )

    def error_line(self) -> str:
        parts = [self.summary()]
        for label, keys in (("missing", self.missing), ("unexpected", self.unexpected), ("mismatched", self.mismatched)):
            if keys:
                more = f" (+{len(keys) - _SHOW} more)" if len(keys) > _SHOW else ""
                parts.append(f"{label}: {', '.join(keys[:_SHOW])}{more}")
        return "; ".join(parts)


def load_state_dict_checked(
    module: nn.Module,
    state_dict: dict[str, torch.Tensor],
    source: str,
    required_keys: set[str] | None = None,
    assign: bool = False,
) -> LoadReport:
    """Copy `state_dict` into `module`, failing on any mismatch.

    required_keys: the model keys the file must provide (default: all of them). Keys of the
    model outside that set may be absent (e.g. base weights when loading a LoRA file).
    assign: use the file's tensors as the parameters (for models built on the meta device)."""
    own = module.state_dict()
    required = set(own) if required_keys is None else required_keys
    report = LoadReport(source)
    for key, value in state_dict.items():
        if key not in own:
            report.unexpected.append(key)
        elif tuple(value.shape) != tuple(own[key].shape):
            report.mismatched.append(f"{key} {tuple(value.shape)} vs {tuple(own[key].shape)}")
        else:
            report.matched.append(key)
    report.missing = sorted(required - set(state_dict))
    if not report.ok:
        raise WeightsError(report.error_line())
    with torch.no_grad():
        module.load_state_dict({k: state_dict[k] for k in report.matched}, strict=False, assign=assign)
    log.info(report.summary())
    return report


def read_safetensors(path: str | Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    path = Path(path)
    if path.suffix in PICKLE_SUFFIXES:
        raise WeightsError(
            f"{path}: pickled checkpoint; convert it once with `chromaflow convert-weights {path.parent} DST` "
            "(only safetensors are loaded)"
        )
    try:
        return load_file(str(path))
    except FileNotFoundError:
        raise WeightsError(f"{path}: weights file not found") from None
    except Exception as exc:  # safetensors raises its own error types for bad headers
        raise WeightsError(f"{path}: not a readable safetensors file ({exc})") from None


def find_weights_file(folder: Path, stem: str) -> Path:
    """`folder/stem.safetensors`; a clear error if only a pickled version (or nothing) is there."""
    candidate = folder / f"{stem}.safetensors"
    if candidate.is_file():
        return candidate
    pickled = [folder / f"{stem}{s}" for s in PICKLE_SUFFIXES if (folder / f"{stem}{s}").is_file()]
    if pickled:
        raise WeightsError(
            f"{pickled[0]}: pickled checkpoint; convert the folder once with "
            f"`chromaflow convert-weights {folder} DST` and point the config at DST"
        )
    raise WeightsError(f"{candidate}: weights file not found")


def read_json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise WeightsError(f"{path}: config file not found") from None
    except json.JSONDecodeError as exc:
        raise WeightsError(f"{path}: not valid JSON ({exc.msg} at line {exc.lineno})") from None


# -- the release folder + SD1.5 folder ---------------------------------------------------

GUIDER_FOLDER = "GraySD"
SD15_SUBFOLDERS = ("unet", "vae", "text_encoder", "tokenizer", "scheduler")


@dataclass
class ColorFlowComponents:
    """Everything the ICP+GSRP pipeline needs, loaded and checked."""

    unet: Any
    guider: Any
    vae: Any
    text_encoder: Any
    tokenizer: Any
    scheduler: Any
    multires: Any | None  # None: the folder has no MultiResNetModel, GSRP is skipped
    reports: list[LoadReport] = field(default_factory=list)


def _require_dir(path: Path, what: str) -> Path:
    if not path.is_dir():
        raise WeightsError(f"{path}: {what} folder not found")
    return path


def _load_model(cls, folder: Path, weights_stem: str, reports: list[LoadReport], config: dict | None = None):
    config = read_json(folder / "config.json") if config is None else config
    try:
        # built on the meta device: no random init, no second copy of SD-size weights in RAM;
        # the checked load below then assigns every tensor from the file
        with torch.device("meta"):
            model = cls.from_config(config)
    except (TypeError, ValueError) as exc:
        raise WeightsError(f"{folder / 'config.json'}: cannot build {cls.__name__} ({exc})") from None
    path = find_weights_file(folder, weights_stem)
    reports.append(load_state_dict_checked(model, read_safetensors(path), str(path), assign=True))
    _check_materialized(model, path)
    return model.eval()


def _check_materialized(model: nn.Module, path: Path) -> None:
    left = [name for name, t in [*model.named_parameters(), *model.named_buffers()] if t.is_meta]
    if left:
        raise WeightsError(f"{path}: tensors not provided by the file: {', '.join(left[:_SHOW])}")


def load_text_encoder(folder: Path, reports: list[LoadReport]):
    from transformers import CLIPTextModel

    _require_dir(folder, "text_encoder")
    try:
        model, info = CLIPTextModel.from_pretrained(
            str(folder), local_files_only=True, use_safetensors=True, output_loading_info=True
        )
    except OSError as exc:
        raise WeightsError(f"{folder}: cannot load the CLIP text encoder ({str(exc).splitlines()[0]})") from None
    report = LoadReport(str(folder))
    report.missing = sorted(info.get("missing_keys", []))
    report.unexpected = sorted(info.get("unexpected_keys", []))
    report.mismatched = [str(m) for m in info.get("mismatched_keys", [])]
    report.matched = [k for k in model.state_dict() if k not in set(report.missing)]
    if not report.ok:
        raise WeightsError(report.error_line())
    reports.append(report)
    return model.eval()


def load_colorflow(
    colorflow_root: str | Path,
    sd15_root: str | Path,
    *,
    merge_lora: bool = True,
    use_gsrp: bool = True,
) -> ColorFlowComponents:
    """Load and check every component on CPU in float32 (the pipeline casts and moves them).

    colorflow_root: the release folder (converted to safetensors); sd15_root: SD1.5 in
    diffusers layout. merge_lora folds the LoRA into the UNet weights (faster inference)."""
    from diffusers import AutoencoderKL, UniPCMultistepScheduler
    from transformers import CLIPTokenizer

    from .gsrp import MultiHiddenResNetModel
    from .guider import ColorGuider
    from .lora import add_colorflow_lora, load_lora_weights, lora_rank
    from .lora import merge_lora as merge
    from .unet import ColorFlowUNet2DConditionModel

    colorflow_root, sd15_root = Path(colorflow_root), Path(sd15_root)
    graysd = _require_dir(_require_dir(colorflow_root, "ColorFlow release") / GUIDER_FOLDER, "ColorFlow GraySD")
    _require_dir(sd15_root, "SD1.5")
    for sub in SD15_SUBFOLDERS:
        _require_dir(sd15_root / sub, f"SD1.5 {sub}")
    reports: list[LoadReport] = []

    unet = _load_model(ColorFlowUNet2DConditionModel, sd15_root / "unet", "diffusion_pytorch_model", reports)
    lora_path = find_weights_file(graysd, "unet_lora")
    lora = read_safetensors(lora_path)
    try:
        rank = lora_rank(lora)
    except ValueError:
        raise WeightsError(f"{lora_path}: no lora_A tensors (is this the LoRA file?)") from None
    with torch.device("meta"):
        add_colorflow_lora(unet, rank)
    reports.append(load_lora_weights(unet, lora, str(lora_path), assign=True))
    _check_materialized(unet, lora_path)
    if merge_lora:
        merge(unet)

    guider = _load_model(ColorGuider, graysd, "diffusion_pytorch_model", reports)
    vae = _load_model(AutoencoderKL, sd15_root / "vae", "diffusion_pytorch_model", reports)

    multires = None
    has_multires = any((graysd / f"MultiResNetModel{s}").is_file() for s in WEIGHT_SUFFIXES + PICKLE_SUFFIXES)
    if use_gsrp and has_multires:
        boc = tuple(vae.config.block_out_channels)
        channels = MultiHiddenResNetModel.channels_for_vae(boc)
        config = {"channels_list": channels, "num_tensors": len(channels)}
        multires = _load_model(MultiHiddenResNetModel, graysd, "MultiResNetModel", reports, config=config)

    text_encoder = load_text_encoder(sd15_root / "text_encoder", reports)
    try:
        tokenizer = CLIPTokenizer.from_pretrained(str(sd15_root / "tokenizer"), local_files_only=True)
    except OSError as exc:
        raise WeightsError(f"{sd15_root / 'tokenizer'}: cannot load the tokenizer ({str(exc).splitlines()[0]})") from None
    scheduler_config = read_json(sd15_root / "scheduler" / "scheduler_config.json")
    scheduler = UniPCMultistepScheduler.from_config(scheduler_config)  # ColorFlow swaps SD's PNDM for UniPC

    if not (colorflow_root / "image_encoder").is_dir():
        log.info("%s: no image_encoder/ (only the retrieval stage uses it)", colorflow_root)
    return ColorFlowComponents(unet, guider, vae, text_encoder, tokenizer, scheduler, multires, reports)
