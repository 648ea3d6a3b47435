"""The per-worker training loop shared by train-colorizer and train-guided-sr.

One code path from one CPU worker (tests) to many GPUs: Ray Train runs `train_worker` in
every worker (ray_train.py); the same function runs in-process for benchmarks. Per step:
`grad_accum` micro-batches (DDP gradient sync only on the last), bf16 autocast where
supported, gradient clipping, AdamW (8-bit when bitsandbytes is there), optional EMA.
Rank 0 appends RUN_DIR/metrics.jsonl, writes checkpoints and runs validation. A run
restarts from the newest checkpoint in RUN_DIR; data order and noise depend only on
(seed, rank, step), so the resumed loss curve is the uninterrupted one.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn

from chromaflow.conf import Config

from . import checkpoint as ckpt
from .report import append_metrics, truncate_metrics
from .sampling import step_generator

log = logging.getLogger(__name__)


@dataclass
class WorkerContext:
    rank: int = 0
    world_size: int = 1
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    prepare: Callable[[nn.Module], nn.Module] = lambda module: module  # DDP wrapping
    report: Callable[[dict], None] = lambda metrics: None  # Ray Train's report


def autocast_dtype(setting: str, device: torch.device) -> torch.dtype | None:
    cuda = device.type == "cuda"
    if setting == "no":
        return None
    if setting == "bf16":
        if cuda and not torch.cuda.is_bf16_supported():
            raise ValueError("train.mixed_precision=bf16: this GPU has no bfloat16 support; use mixed_precision=no")
        return torch.bfloat16
    return torch.bfloat16 if cuda and torch.cuda.is_bf16_supported() else None


def make_optimizer(params: list[nn.Parameter], cfg, device: torch.device):
    """(optimizer, name): 8-bit AdamW (bitsandbytes) when asked or when `auto` finds it on a GPU."""
    choice = cfg.optimizer
    if choice in ("auto", "adamw8bit"):
        try:
            import bitsandbytes as bnb
        except ImportError:
            if choice == "adamw8bit":
                raise ValueError("train.optimizer=adamw8bit needs the bitsandbytes package (pip install bitsandbytes)") from None
            bnb = None
        if bnb is not None and (choice == "adamw8bit" or device.type == "cuda"):
            return bnb.optim.AdamW8bit(params, lr=cfg.lr, weight_decay=cfg.weight_decay), "adamw8bit"
    return torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay), "adamw"


def parameters_digest(params: list[nn.Parameter]) -> str:
    h = hashlib.sha256()
    for p in params:
        h.update(p.detach().float().cpu().numpy().tobytes())
    return h.hexdigest()


def _gather(value: Any, world_size: int) -> list[Any]:
    if world_size == 1:
        return [value]
    out: list[Any] = [None] * world_size
    torch.distributed.all_gather_object(out, value)
    return out


def _mean(value: float, world_size: int, device: torch.device) -> float:
    if world_size == 1:
        return value
    t = torch.tensor([value], dtype=torch.float64, device=device)
    torch.distributed.all_reduce(t)
    return float(t.item()) / world_size


class Trainer:
    """State of one worker's run; `run()` does the steps."""

    def __init__(self, kind: str, data_dir: str, run_dir: str, config: Config, ctx: WorkerContext):
        from .builders import build_parts

        self.kind, self.run_dir, self.config, self.cfg, self.ctx = kind, Path(run_dir), config, config.train, ctx
        self.task = build_parts(kind, data_dir, run_dir, config, ctx.rank, ctx.world_size)
        self.module = self.task.module
        self.start_step = self._restore_weights()
        self.module.to(ctx.device)
        self.module.train()
        self.task.set_frozen_modes()
        self.params = [p for p in self.module.parameters() if p.requires_grad]
        self.model = ctx.prepare(self.module)
        self.optimizer, self.optimizer_name = make_optimizer(self.params, self.cfg, ctx.device)
        warmup = max(1, self.cfg.lr_warmup_steps)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, lambda s: min(1.0, (s + 1) / warmup))
        self.ema = self._make_ema()
        self.autocast = autocast_dtype(self.cfg.mixed_precision, ctx.device)
        if self.start_step:
            self._restore_state()

    # -- resume ------------------------------------------------------------------------
    def _restore_weights(self) -> int:
        found = ckpt.latest_checkpoint(self.run_dir)
        if found is None:
            return 0
        step, path = found
        from chromaflow.models.colorflow.weights import read_safetensors

        if (path / ckpt.RAW_WEIGHTS).is_file():  # EMA run: the checkpoint's GraySD files hold the EMA weights
            raw = read_safetensors(path / ckpt.RAW_WEIGHTS)
            files = {name: {k[len(name) + 1:]: v for k, v in raw.items() if k.startswith(name + "/")}
                     for name in self.module.trainable_state()}
        else:
            files = {name: read_safetensors(path / "GraySD" / name) for name in self.module.trainable_state()}
        self.module.load_trainable(files, str(path))
        self.resumed_from = path
        return step

    def _restore_state(self) -> None:
        state = ckpt.read_training_state(self.resumed_from)
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        if self.ema is not None and "ema" in state:
            self.ema.load_state_dict(state["ema"])
        log.info("resumed from %s (step %d)", self.resumed_from, self.start_step)

    def _make_ema(self):
        if self.cfg.ema_decay is None:
            return None
        from diffusers.training_utils import EMAModel

        return EMAModel(self.params, decay=self.cfg.ema_decay)

    # -- one step ----------------------------------------------------------------------
    def step(self, step: int, batches: list[dict[str, torch.Tensor]]) -> float:
        total = 0.0
        for micro, batch in enumerate(batches):
            last = micro == len(batches) - 1
            sync = contextlib.nullcontext() if last or self.ctx.world_size == 1 else self.model.no_sync()
            generator = step_generator(self.cfg.seed, self.ctx.rank, step, micro)
            inputs = {k: v.to(self.ctx.device, non_blocking=True) for k, v in batch.items()}
            with sync, torch.autocast(self.ctx.device.type, dtype=self.autocast or torch.float32,
                                      enabled=self.autocast is not None):
                loss = self.model(**inputs, generator=generator) / len(batches)
            with sync:
                loss.backward()
            total += float(loss.detach())
        if self.cfg.max_grad_norm > 0:
            torch.nn.utils.clip_grad_norm_(self.params, self.cfg.max_grad_norm)
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        if self.ema is not None:
            self.ema.step(self.params)
        return total

    # -- data --------------------------------------------------------------------------
    @property
    def samples_per_step(self) -> int:
        return self.cfg.grad_accum * self.cfg.batch_size

    def batches(self):
        """(step, [micro-batch, ...]) from start_step on; sample counters continue the run's."""
        from torch.utils.data import DataLoader

        per_step = self.samples_per_step
        sampler = range(self.start_step * per_step, self.cfg.steps * per_step)
        loader = DataLoader(self.task.samples, batch_size=self.cfg.batch_size, sampler=sampler,
                            num_workers=self.cfg.data_workers, pin_memory=self.ctx.device.type == "cuda",
                            persistent_workers=self.cfg.data_workers > 0)
        stream = iter(loader)
        for step in range(self.start_step, self.cfg.steps):
            yield step, [next(stream) for _ in range(self.cfg.grad_accum)]

    # -- checkpoints and validation ----------------------------------------------------
    def save(self, step: int) -> Path | None:
        """Collective (replica checksums are gathered); rank 0 writes."""
        digests = _gather(parameters_digest(self.params), self.ctx.world_size)
        if self.ctx.rank != 0:
            return None

        def cpu(files):
            return {name: {k: v.detach().to("cpu", copy=True) for k, v in sd.items()} for name, sd in files.items()}

        weights, raw = cpu(self.module.trainable_state()), None
        if self.ema is not None:  # checkpoints hold the EMA weights; the raw ones resume the run
            raw = {f"{name}/{k}": v for name, sd in weights.items() for k, v in sd.items()}
            self.ema.store(self.params)
            self.ema.copy_to(self.params)
            weights = cpu(self.module.trainable_state())
            self.ema.restore(self.params)
        training = {"optimizer": self.optimizer.state_dict(), "scheduler": self.scheduler.state_dict()}
        if self.ema is not None:
            training["ema"] = self.ema.state_dict()
        state = {"kind": self.kind, "world_size": self.ctx.world_size, "replica_sha256": digests,
                 "samples_seen": step * self.samples_per_step * self.ctx.world_size, "saved_at": time.time()}
        return ckpt.save_checkpoint(self.run_dir, step, weights, self.module.graysd_configs(), training, state,
                                    complete_from=self.task.init_graysd, raw=raw, keep=self.cfg.keep_checkpoints)

    def validating(self, step: int) -> bool:
        every = self.cfg.validate_every
        return bool(every) and (step % every == 0 or step == self.cfg.steps)

    def _log(self, step: int, losses: list[float], started: float, peak: float) -> None:
        elapsed = max(time.time() - started, 1e-9)
        record = {"step": step, "loss": _mean(sum(losses) / len(losses), self.ctx.world_size, self.ctx.device),
                  "lr": float(self.scheduler.get_last_lr()[0]),
                  "samples_per_s": len(losses) * self.samples_per_step * self.ctx.world_size / elapsed,
                  "steps_per_s": len(losses) / elapsed}
        if self.ctx.device.type == "cuda":
            record["peak_memory_gb"] = round(max(peak, torch.cuda.max_memory_allocated(self.ctx.device) / 2**30), 3)
        if self.ctx.rank == 0:
            append_metrics(self.run_dir, record)
        self.ctx.report(record)

    def run(self) -> dict:
        if self.ctx.rank == 0:
            truncate_metrics(self.run_dir, self.start_step)
            self.task.write_run_info(self.start_step, self.optimizer_name, self.autocast, self.params)
        if self.start_step == 0 and self.cfg.validate_every:
            path = self.save(0)
            if path is not None:
                self.task.validate(path, 0)
        losses, started = [], time.time()
        for step, batches in self.batches():
            losses.append(self.step(step, batches))
            done = step + 1
            if done % self.cfg.log_every == 0 or done == self.cfg.steps:
                self._log(done, losses, started, 0.0)
                losses, started = [], time.time()
            if done % self.cfg.checkpoint_every == 0 or done == self.cfg.steps:
                path = self.save(done)
                if path is not None and self.validating(done):
                    self.task.validate(path, done)
        return {"steps": self.cfg.steps, "start_step": self.start_step}


def train_worker(kind: str, data_dir: str, run_dir: str, config_json: dict, ctx: WorkerContext) -> dict:
    config = Config.model_validate(config_json)
    if ctx.device.type == "cpu":
        # as many threads as the worker's CPUs: oversubscribed tiny kernels run 4-8x slower
        torch.set_num_threads(max(1, int(config.train.cpus_per_worker)))
    torch.manual_seed(config.train.seed)  # only fresh layers' init draws from it (same on every rank)
    return Trainer(kind, data_dir, run_dir, config, ctx).run()
