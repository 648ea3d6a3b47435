"""Loading ColorFlow's release folder + a local SD1.5 diffusers folder, with strict key reports.

Expected layout (paths come from config; nothing is downloaded):

    <colorflow_root>/
        image_encoder/                 (CLIP vision model; used by retrieval, only checked here)
        GraySD/config.json             ColorGuider config (ColorGuiderSDModel)
        GraySD/diffusion_pytorch_model.safetensors
        GraySD/unet_lora.safetensors
        GraySD/MultiResNetModel.safetensors      (optional: without it, no GSRP)
    <sd15_root>/ unet/ vae/ text_encoder/ tokenizer/ scheduler/   (diffusers layout)

UNet, VAE and guider folders load with diffusers' own `from_pretrained(local_files_only=True,
use_safetensors=True)`, so sharded (`*.safetensors.index.json`) and fp16-variant
(`diffusion_pytorch_model.fp16.safetensors`) checkpoints load too; its loading info becomes a
`LoadReport` and any missing / unexpected / shape-mismatched key is a one-line `WeightsError`
naming the file. The LoRA and MultiResNet files (no config.json of their own) go through
`checked_load.load_state_dict_checked`.

The release ships pickled `.bin` files; they are converted once with
`chromaflow convert-weights SRC DST` (convert.py). Here only safetensors are read: a folder
that only has the `.bin` gets an error telling you to convert it.
"""

from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

# re-exported: callers import the loading errors and helpers from here
from .checked_load import (  # noqa: F401
    PICKLE_SUFFIXES,
    WEIGHT_SUFFIXES,
    LoadReport,
    WeightsError,
    find_weights_file,
    load_state_dict_checked,
    read_json,
    read_safetensors,
)

log = logging.getLogger(__name__)

GUIDER_FOLDER = "GraySD"
SD15_SUBFOLDERS = ("unet", "vae", "text_encoder", "tokenizer", "scheduler")
DIFFUSERS_WEIGHTS = "diffusion_pytorch_model"
VARIANTS = (None, "fp16")  # tried in this order


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


def diffusers_weights(folder: Path) -> tuple[Path, str | None]:
    """The safetensors checkpoint of a diffusers model folder: (file or shard index, variant).
    A folder with only pickled weights gets the convert-weights hint."""
    for variant in VARIANTS:
        stem = DIFFUSERS_WEIGHTS if variant is None else f"{DIFFUSERS_WEIGHTS}.{variant}"
        for name in (f"{stem}.safetensors.index.json", f"{stem}.safetensors"):
            if (folder / name).is_file():
                return folder / name, variant
    return find_weights_file(folder, DIFFUSERS_WEIGHTS), None  # raises: pickled only, or nothing


@contextlib.contextmanager
def _quiet_diffusers():
    """diffusers logs multi-line key lists (and shard progress bars) before we raise our own
    one-line report: silence it for the load."""
    from diffusers.utils import logging as dlog

    verbosity, bars = dlog.get_verbosity(), dlog.is_progress_bar_enabled()
    dlog.set_verbosity_error()
    dlog.disable_progress_bar()
    try:
        yield
    finally:
        dlog.set_verbosity(verbosity)
        if bars:
            dlog.enable_progress_bar()


def load_pretrained_checked(cls, folder: Path, reports: list[LoadReport]):
    """`cls.from_pretrained(folder)` (a diffusers ModelMixin) in float32, strict."""
    source, variant = diffusers_weights(folder)
    read_json(folder / "config.json")  # a clear error for a missing / broken config
    try:
        with _quiet_diffusers():
            model, info = cls.from_pretrained(
                str(folder), local_files_only=True, use_safetensors=True, output_loading_info=True,
                variant=variant, dtype=torch.float32,
            )
    except (OSError, ValueError, RuntimeError, TypeError) as exc:
        # e.g. "Cannot load ... because <key> expected shape ..., but got ..." (shape mismatch)
        detail = " ".join(str(exc).split()).split(" If you want")[0]
        raise WeightsError(f"{source}: cannot load {cls.__name__} ({detail})") from None
    report = LoadReport.from_info(str(source), info, model.state_dict())
    if not report.ok:
        raise WeightsError(report.error_line())
    log.info(report.summary())
    reports.append(report)
    return model.eval()


def _check_materialized(model: torch.nn.Module, path: Path) -> None:
    left = [name for name, t in [*model.named_parameters(), *model.named_buffers()] if t.is_meta]
    if left:
        raise WeightsError(f"{path}: tensors not provided by the file: {', '.join(left[:5])}")


def load_unet_with_lora(unet_folder: Path, graysd: Path, reports: list[LoadReport], merge: bool):
    """The SD1.5 UNet (ColorFlow's hooked subclass) with the release's LoRA, strictly loaded;
    merge: fold it into the base weights with diffusers' fuse_lora + unload_lora."""
    from .lora import add_colorflow_lora, load_lora_weights, lora_rank, merge_lora
    from .unet import ColorFlowUNet2DConditionModel

    unet = load_pretrained_checked(ColorFlowUNet2DConditionModel, unet_folder, reports)
    lora_path = find_weights_file(graysd, "unet_lora")
    lora = read_safetensors(lora_path)
    try:
        rank = lora_rank(lora)
    except ValueError:
        raise WeightsError(f"{lora_path}: no lora_A tensors (is this the LoRA file?)") from None
    with torch.device("meta"):  # the LoRA tensors are then assigned from the file
        add_colorflow_lora(unet, rank)
    reports.append(load_lora_weights(unet, lora, str(lora_path), assign=True))
    _check_materialized(unet, lora_path)
    if merge:
        merge_lora(unet)
    return unet


def load_multires(graysd: Path, vae, reports: list[LoadReport]):
    """GSRP's MultiHiddenResNetModel (the release has no config.json for it: its channels
    follow the VAE), or None when the folder has no MultiResNetModel file."""
    from .gsrp import MultiHiddenResNetModel

    if not any((graysd / f"MultiResNetModel{s}").is_file() for s in WEIGHT_SUFFIXES + PICKLE_SUFFIXES):
        return None
    path = find_weights_file(graysd, "MultiResNetModel")
    channels = MultiHiddenResNetModel.channels_for_vae(tuple(vae.config.block_out_channels))
    with torch.device("meta"):  # no random init; the checked load assigns every tensor
        model = MultiHiddenResNetModel(channels, len(channels))
    reports.append(load_state_dict_checked(model, read_safetensors(path), str(path), assign=True))
    _check_materialized(model, path)
    return model.eval()


def load_text_encoder(folder: Path, reports: list[LoadReport]):
    from transformers import CLIPTextModel

    _require_dir(folder, "text_encoder")
    try:
        model, info = CLIPTextModel.from_pretrained(
            str(folder), local_files_only=True, use_safetensors=True, output_loading_info=True, dtype=torch.float32
        )
    except OSError as exc:
        raise WeightsError(f"{folder}: cannot load the CLIP text encoder ({str(exc).splitlines()[0]})") from None
    report = LoadReport.from_info(str(folder), info, model.state_dict())
    if not report.ok:
        raise WeightsError(report.error_line())
    reports.append(report)
    return model.eval()


def load_tokenizer_and_scheduler(sd15_root: Path):
    from diffusers import UniPCMultistepScheduler
    from transformers import CLIPTokenizer

    try:
        tokenizer = CLIPTokenizer.from_pretrained(str(sd15_root / "tokenizer"), local_files_only=True)
    except OSError as exc:
        raise WeightsError(f"{sd15_root / 'tokenizer'}: cannot load the tokenizer ({str(exc).splitlines()[0]})") from None
    scheduler_config = read_json(sd15_root / "scheduler" / "scheduler_config.json")
    # ColorFlow swaps SD's PNDM for UniPC, built from SD's schedule
    return tokenizer, UniPCMultistepScheduler.from_config(scheduler_config)


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
    from diffusers import AutoencoderKL

    from .guider import ColorGuider

    colorflow_root, sd15_root = Path(colorflow_root), Path(sd15_root)
    graysd = _require_dir(_require_dir(colorflow_root, "ColorFlow release") / GUIDER_FOLDER, "ColorFlow GraySD")
    _require_dir(sd15_root, "SD1.5")
    for sub in SD15_SUBFOLDERS:
        _require_dir(sd15_root / sub, f"SD1.5 {sub}")
    reports: list[LoadReport] = []

    unet = load_unet_with_lora(sd15_root / "unet", graysd, reports, merge=merge_lora)
    guider = load_pretrained_checked(ColorGuider, graysd, reports)
    vae = load_pretrained_checked(AutoencoderKL, sd15_root / "vae", reports)
    multires = load_multires(graysd, vae, reports) if use_gsrp else None
    text_encoder = load_text_encoder(sd15_root / "text_encoder", reports)
    tokenizer, scheduler = load_tokenizer_and_scheduler(sd15_root)

    if not (colorflow_root / "image_encoder").is_dir():
        log.info("%s: no image_encoder/ (only the retrieval stage uses it)", colorflow_root)
    return ColorFlowComponents(unet, guider, vae, text_encoder, tokenizer, scheduler, multires, reports)
