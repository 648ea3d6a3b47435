"""What a run of each kind is made of: its module, its sample stream, where its base and
init weights are, how it validates. `build_parts` is called in every Ray Train worker."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from chromaflow.conf import Config
from chromaflow.storage.atomic import write_json

from .base import attach_lora, graysd_folder, load_base, load_guider, load_multires, prompt_embedding
from .dataset import ShardReader, open_training_set
from .random_base import random_base
from .sampling import SampleOrder, worker_shards

COLORIZER, GUIDED_SR = "colorizer", "guided-sr"
KINDS = (COLORIZER, GUIDED_SR)
RUN_JSON = "run.json"


class TrainingSetupError(ValueError):
    """A run cannot start (no base weights, empty training set); one line."""


def resolve_sd15(config: Config, run_dir: str | Path) -> Path:
    """The SD1.5 folder a run trains on (the driver writes random bases before the workers start)."""
    train = config.train
    if train.random_base:
        return random_base(train.random_base, run_dir, train.seed)
    path = train.sd15_path or config.colorize.diffusion.sd15_path
    if not path:
        raise TrainingSetupError("training needs SD1.5 base weights: set train.sd15_path (or "
                                 "colorize.diffusion.sd15_path); train.random_base=tiny|sd15 for tests")
    return Path(path)


@dataclass
class RunParts:
    kind: str
    config: Config
    run_dir: Path
    data_dir: Path
    sd15: Path
    init_graysd: Path | None
    module: Any
    samples: Any

    def set_frozen_modes(self) -> None:
        self.module.vae.eval()  # frozen parts never see train-mode behaviour

    def validate(self, checkpoint: Path, step: int) -> dict:
        from .validation import validate_checkpoint

        return validate_checkpoint(self.kind, checkpoint, step, self.sd15, self.data_dir, self.run_dir, self.config)

    def write_run_info(self, start_step: int, optimizer: str, autocast, params: list[torch.nn.Parameter]) -> None:
        path = self.run_dir / RUN_JSON
        info = json.loads(path.read_text()) if path.is_file() else {}
        starts = info.get("starts", []) + [{"step": start_step, "at": time.time()}]
        info.update({"kind": self.kind, "data": str(self.data_dir), "sd15": str(self.sd15),
                     "init_weights": str(self.init_graysd.parent) if self.init_graysd else None,
                     "optimizer": optimizer, "precision": str(autocast or torch.float32).replace("torch.", ""),
                     "trainable_parameters": int(sum(p.numel() for p in params)),
                     "device": str(next(iter(params)).device), "starts": starts,
                     "config": self.config.model_dump(mode="json")})
        write_json(path, info)


def _samples(kind: str, data_dir: Path, config: Config, rank: int, world_size: int):
    from .colorizer import ColorizerSamples
    from .guided_sr import GuidedSRSamples

    dataset = open_training_set(data_dir)
    paths, chosen = worker_shards(dataset.shards("train"), rank, world_size)
    if not paths:
        raise TrainingSetupError(f"{data_dir}: the training split has no shards")
    reader = ShardReader(paths)
    order = SampleOrder(list(range(len(reader)))[chosen], config.train.seed, rank)
    if kind == COLORIZER:
        return ColorizerSamples(reader, order, config.train, config.colorize.diffusion.input_style)
    return GuidedSRSamples(reader, order, config.train)


def _module(kind: str, sd15: Path, init: Path | None, config: Config):
    from .colorizer import ColorizerModule
    from .guided_sr import GuidedSRModule

    train = config.train
    base = load_base(sd15)
    if kind == COLORIZER:
        # the guider first: from scratch it copies the plain UNet's weights (before LoRA wraps them)
        guider = load_guider(init, base.unet, config.colorize.diffusion.conditioning_channels).requires_grad_(True)
        attach_lora(base.unet, init, train.lora_rank)
        if train.gradient_checkpointing:
            base.unet.enable_gradient_checkpointing()
            guider.enable_gradient_checkpointing()  # ColorGuider declares the flag (stock diffusers blocks)
        return ColorizerModule(base, guider, prompt_embedding(base, config.colorize.diffusion.prompt),
                               train.timestep_shift)
    multires = load_multires(init, base.vae).requires_grad_(True)
    return GuidedSRModule(base.vae, multires, train.gsrp_vae_roundtrip)


def build_parts(kind: str, data_dir: str | Path, run_dir: str | Path, config: Config, rank: int = 0,
                world_size: int = 1) -> RunParts:
    if kind not in KINDS:
        raise ValueError(f"unknown training kind {kind!r} ({', '.join(KINDS)})")
    run_dir, data_dir = Path(run_dir), Path(data_dir)
    sd15 = resolve_sd15(config, run_dir)
    init = graysd_folder(config.train.init_weights)
    samples = _samples(kind, data_dir, config, rank, world_size)
    return RunParts(kind, config, run_dir, data_dir, sd15, init, _module(kind, sd15, init, config), samples)
