"""Benchmark of the training step: steps/s, samples/s and peak GPU memory of train-colorizer
(ColorGuider + UNet LoRA r=64) and train-guided-sr (GSRP fusion), over ~200 steps.

GPU (default when CUDA is there): SD1.5-size architecture with random weights
(`train.random_base=sd15`: no base weights needed, timing does not depend on their values),
512x800 query = 1024x1600 canvas, patch-wise crops (context 0.25..1, downsample 0.5), bf16
autocast, gradient checkpointing, AdamW (8-bit if bitsandbytes is installed); GSRP on 512px
crops. The batch is the largest power of two that fits (probed with 2 steps each).
`--tiny`: the same code on CPU with conf/tiny.yaml's models (smoke run).

The steps run in this process through the trainer Ray Train runs in every worker
(training/loop.py `Trainer.step`), on a small synthetic colored archive built here with
build-training-set. Results: docs/training.md, docs/benchmarks.md.

    python bench/bench_training.py --json out.json            # GPU
    python bench/bench_training.py --tiny --steps 20          # CPU smoke run
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent


def synthetic_archive(root: Path, chapters: int, pages: int, size: tuple[int, int]) -> Path:
    """Colored 'manga' pages: flat-colored shapes with black outlines on white."""
    rng = np.random.default_rng(0)
    width, height = size
    for c in range(chapters):
        folder = root / f"chapter{c + 1}"
        folder.mkdir(parents=True, exist_ok=True)
        for p in range(pages):
            page = np.full((height, width, 3), 255, np.uint8)
            for _ in range(8):
                color = tuple(int(v) for v in rng.integers(0, 256, 3))
                center = (int(rng.integers(0, width)), int(rng.integers(0, height)))
                radius = int(rng.integers(width // 16, width // 5))
                cv2.circle(page, center, radius, color, -1)
                cv2.circle(page, center, radius, (0, 0, 0), max(2, width // 200))
            cv2.imwrite(str(folder / f"p{p + 1}.png"), cv2.cvtColor(page, cv2.COLOR_RGB2BGR))
    return root


def overrides(tiny: bool) -> list[str]:
    if tiny:
        return ["train.validate_every=0", "train.data_workers=0"]
    return ["train.random_base=sd15", "train.query_size=512x800", "train.page_max_side=1280", "colorize.work_size=1280",
            "train.validate_every=0", "train.data_workers=4", "train.cpus_per_worker=4", "train.lora_rank=64",
            "train.gsrp_crop=512"]


def _batches(trainer, size: int, count: int, start: int):
    from torch.utils.data import DataLoader

    trainer.cfg.batch_size = size  # the samples read the same config object (crop sizes per micro-batch)
    sampler = range(start * size, (start + count) * size)
    loader = DataLoader(trainer.task.samples, batch_size=size, sampler=sampler,
                        num_workers=trainer.cfg.data_workers, pin_memory=trainer.ctx.device.type == "cuda")
    return iter(loader)


def probe_batch(trainer, candidates: list[int]) -> int:
    best = candidates[0]
    for size in candidates:
        try:
            stream = _batches(trainer, size, 2, 0)
            for step in range(2):
                trainer.step(step, [next(stream)])
            best = size
        except torch.cuda.OutOfMemoryError:
            break
        finally:
            trainer.optimizer.zero_grad(set_to_none=True)
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
    return best


def measure(kind: str, data: Path, run_dir: Path, config, steps: int, batches: list[int]) -> dict:
    from chromaflow.training.builders import resolve_sd15
    from chromaflow.training.loop import Trainer, WorkerContext

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    resolve_sd15(config, run_dir)
    trainer = Trainer(kind, str(data), str(run_dir), config, WorkerContext(device=device))
    batch = probe_batch(trainer, batches)
    warmup = min(5, max(1, steps // 10))
    stream = _batches(trainer, batch, steps + warmup, 10)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    for step in range(warmup):
        trainer.step(10 + step, [next(stream)])
    if device.type == "cuda":
        torch.cuda.synchronize()
    started = time.perf_counter()
    losses = [trainer.step(10 + warmup + s, [next(stream)]) for s in range(steps)]
    if device.type == "cuda":
        torch.cuda.synchronize()
    seconds = time.perf_counter() - started
    return {"kind": kind, "device": torch.cuda.get_device_name() if device.type == "cuda" else "cpu",
            "batch": batch, "steps": steps, "steps_per_s": steps / seconds, "samples_per_s": steps * batch / seconds,
            "peak_memory_gb": torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None,
            "precision": str(trainer.autocast or torch.float32).replace("torch.", ""), "optimizer": trainer.optimizer_name,
            "trainable_parameters": int(sum(p.numel() for p in trainer.params)),
            "loss_first": losses[0], "loss_last": losses[-1]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tiny", action="store_true", help="conf/tiny.yaml models on CPU (smoke run)")
    parser.add_argument("--steps", type=int, default=None, help="timed steps per kind (default 200; --tiny 20)")
    parser.add_argument("--kinds", nargs="+", default=["colorizer", "guided-sr"])
    parser.add_argument("--batches", type=int, nargs="+", default=None, help="batch sizes to probe, ascending")
    parser.add_argument("--work", type=Path, default=None, help="scratch folder (default: a temp dir)")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    from chromaflow.conf import load_config
    from chromaflow.training.build_set import build_training_set

    if not args.tiny and not torch.cuda.is_available():
        raise SystemExit("no CUDA device: run with --tiny for the CPU smoke run (GPU numbers need a GPU)")
    steps = args.steps or (20 if args.tiny else 200)
    batches = args.batches or ([1, 2] if args.tiny else [1, 2, 4, 8, 16, 32])
    work = args.work or Path(tempfile.mkdtemp(prefix="bench_training_"))
    config = load_config(ROOT / "conf" / "tiny.yaml" if args.tiny else None, overrides(args.tiny))
    page = (128, 128) if args.tiny else (800, 1280)
    src = synthetic_archive(work / "archive", chapters=2, pages=4 if args.tiny else 8, size=page)
    started = time.perf_counter()
    build_training_set(src, work / "data", config)
    print(f"training set: {time.perf_counter() - started:.1f} s")
    results = [measure(kind, work / "data", work / f"run-{kind}", config, steps, batches) for kind in args.kinds]
    for r in results:
        memory = f"{r['peak_memory_gb']:.1f} GB peak" if r["peak_memory_gb"] is not None else "cpu"
        print(f"{r['kind']:>10}: batch {r['batch']}, {r['steps_per_s']:.3f} steps/s, {r['samples_per_s']:.2f} samples/s, "
              f"{memory}, {r['precision']}, {r['optimizer']}, {r['trainable_parameters'] / 1e6:.1f} M trainable, "
              f"loss {r['loss_first']:.4f} -> {r['loss_last']:.4f} ({r['device']})")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
