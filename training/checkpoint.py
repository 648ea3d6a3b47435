"""Training checkpoints: a ColorFlow weights folder plus what resuming needs.

    RUN_DIR/checkpoints/step-000500/
      GraySD/config.json                          ColorGuider config (the release's schema)
      GraySD/diffusion_pytorch_model.safetensors  ColorGuider weights
      GraySD/unet_lora.safetensors                UNet LoRA (`.lora_A.default.` names)
      GraySD/MultiResNetModel.safetensors         GSRP fusion module
      training/state.pt                           optimizer, LR schedule, EMA (torch.save of tensors
                                                  and plain values; read with weights_only=True)
      training/raw.safetensors                    with EMA only: the raw trainable weights
      trainer_state.json                          step, run, replica checksums

This is exactly the layout `conf/colorflow-sd15.yaml` loads: `--set colorize.weights=<dir>`.
A run writes the part it trains; the other GraySD files are hard-linked (or copied) from
`train.init_weights`, so every checkpoint is a complete folder when the run started from one.
A checkpoint is written into a temp folder and renamed into place, so a killed run leaves
either a complete checkpoint or none; resuming takes the newest.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import Any

import torch

from chromaflow.models.colorflow.weights import GUIDER_FOLDER

CHECKPOINTS = "checkpoints"
STATE_JSON = "trainer_state.json"
TRAINING_STATE = "training/state.pt"
RAW_WEIGHTS = "training/raw.safetensors"
_STEP = re.compile(r"^step-(\d{6,})$")
GRAYSD_FILES = ("config.json", "diffusion_pytorch_model.safetensors", "unet_lora.safetensors",
                "MultiResNetModel.safetensors")


def step_dir(run_dir: str | Path, step: int) -> Path:
    return Path(run_dir) / CHECKPOINTS / f"step-{step:06d}"


def list_checkpoints(run_dir: str | Path) -> list[tuple[int, Path]]:
    """Complete checkpoints (those with trainer_state.json), oldest first."""
    root = Path(run_dir) / CHECKPOINTS
    found = []
    for path in root.glob("step-*") if root.is_dir() else []:
        match = _STEP.match(path.name)
        if match and (path / STATE_JSON).is_file():
            found.append((int(match.group(1)), path))
    return sorted(found)


def latest_checkpoint(run_dir: str | Path) -> tuple[int, Path] | None:
    found = list_checkpoints(run_dir)
    return found[-1] if found else None


def _save_tensors(state: dict[str, torch.Tensor], path: Path) -> None:
    from safetensors.torch import save_file

    path.parent.mkdir(parents=True, exist_ok=True)
    save_file({k: v.detach().to("cpu").contiguous() for k, v in state.items()}, str(path))


def _link_or_copy(source: Path, target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.link(source, target)  # no second copy of a 3.4 GB guider on disk
    except OSError:
        shutil.copy2(source, target)


def save_checkpoint(run_dir: str | Path, step: int, weights: dict[str, dict[str, torch.Tensor]],
                    configs: dict[str, dict], training_state: dict[str, Any], state: dict[str, Any],
                    complete_from: Path | None = None, raw: dict[str, torch.Tensor] | None = None,
                    keep: int = 3) -> Path:
    """Write checkpoint `step` atomically. weights/configs: {GraySD file name: content};
    complete_from: a GraySD folder whose other files are linked in; raw: the raw trainable
    weights when `weights` hold EMA weights. Prunes to the newest `keep`."""
    final = step_dir(run_dir, step)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.", dir=final.parent))
    try:
        graysd = tmp / GUIDER_FOLDER
        graysd.mkdir()
        for name, tensors in weights.items():
            _save_tensors(tensors, graysd / name)
        for name, content in configs.items():
            (graysd / name).write_text(json.dumps(content, indent=2, sort_keys=True))
        if complete_from is not None:
            for name in GRAYSD_FILES:
                if not (graysd / name).exists() and (complete_from / name).is_file():
                    _link_or_copy(complete_from / name, graysd / name)
        (tmp / "training").mkdir()
        torch.save(training_state, tmp / TRAINING_STATE)
        if raw is not None:
            _save_tensors(raw, tmp / RAW_WEIGHTS)
        (tmp / STATE_JSON).write_text(json.dumps(dict(state, step=step), indent=2, sort_keys=True))
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    prune_checkpoints(run_dir, keep)
    return final


def prune_checkpoints(run_dir: str | Path, keep: int) -> None:
    for _, path in list_checkpoints(run_dir)[:-keep]:
        shutil.rmtree(path, ignore_errors=True)


def read_training_state(path: Path) -> dict[str, Any]:
    return torch.load(path / TRAINING_STATE, map_location="cpu", weights_only=True)


def read_trainer_state(path: Path) -> dict[str, Any]:
    return json.loads((path / STATE_JSON).read_text())
