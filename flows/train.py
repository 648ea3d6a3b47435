"""Training flows beside the inference flows (docs/training.md):

    build-training-set   SRC (colored chapters/episodes) -> DATA (WebDataset training shards)
    train-colorizer      DATA -> RUN_DIR (ColorGuider + UNet LoRA checkpoints), on Ray Train
    train-guided-sr      DATA -> RUN_DIR (GSRP MultiResNetModel checkpoints), on Ray Train

A checkpoint folder is a ColorFlow weights folder: `chromaflow colorize ... --config
conf/colorflow-sd15.yaml --set colorize.weights=RUN_DIR/checkpoints/step-XXXXXX`.
Artifacts: training-set shard table; for training runs the hyper-parameter table, progress,
the loss curve (PNG) and validation samples before/after with their scores.
"""

from __future__ import annotations

import base64
import threading
from pathlib import Path

from prefect import flow, get_run_logger
from prefect.artifacts import (create_markdown_artifact, create_progress_artifact, create_table_artifact,
                               update_progress_artifact)

from chromaflow.conf import load_config
from chromaflow.tasks.train import (build_training_index_task, build_training_shard_task, finish_training_set_task,
                                    fit_training_task, plan_training_set_task, prepare_training_run_task)


@flow(name="build-training-set")
def build_training_set(source: str, out: str, config_path: str | None = None,
                       overrides: list[str] | None = None) -> dict:
    config = load_config(config_path, overrides)
    cfg, out = config.model_dump(mode="json"), str(Path(out).resolve())
    plan = plan_training_set_task(source, out, cfg)
    jobs = [(split, i) for split, count in plan["shards"].items() for i in range(count)]
    for split in {split for split, _ in jobs}:
        build_training_index_task(out, split, cfg)
    progress = create_progress_artifact(0.0, key="training-set-progress", description=f"{out}: shards built")
    futures = [build_training_shard_task.submit(out, split, i, cfg) for split, i in jobs]
    stats = []
    for done, future in enumerate(futures, 1):
        stats.append(future.result())
        update_progress_artifact(progress, 100.0 * done / len(futures))
    info = finish_training_set_task(out, cfg, stats)
    create_table_artifact(key="training-set", description=f"Training shards in {out}", table=[
        {"split": s["split"], "shard": s["shard"], "pages": s["count"], "skipped": len(s["skipped"]),
         "screen_weight_mean": s["screen_weight_mean"], "reference_score_mean": s["reference_score_mean"],
         "reused": s["cached"]} for s in stats])
    return {"out": out, "splits": {k: v["pages"] for k, v in info["splits"].items()}, "skipped": info["skipped"],
            "shards": len(stats), "reused_shards": sum(1 for s in stats if s["cached"])}


class _ProgressTail(threading.Thread):
    """Feeds the progress artifact from RUN_DIR/metrics.jsonl while Ray Train runs."""

    def __init__(self, run_dir: Path, steps: int, artifact_id):
        super().__init__(daemon=True)
        self.run_dir, self.steps, self.artifact_id = run_dir, steps, artifact_id
        self.stop = threading.Event()

    def run(self) -> None:
        from chromaflow.training.report import read_metrics

        last = -1
        while not self.stop.wait(2.0):
            records = read_metrics(self.run_dir)
            step = records[-1]["step"] if records else 0
            if step != last:
                update_progress_artifact(self.artifact_id, 100.0 * step / self.steps)
                last = step


def _start_ray(config) -> bool:
    """ray.init from the flow's thread (Ray ties its daemons to the starting thread)."""
    import logging

    import ray

    if ray.is_initialized():
        return False
    ray.init(address=config.ray.address, include_dashboard=False, logging_level=logging.WARNING)
    return True


def _train(kind: str, data: str, out: str, config_path: str | None, overrides: list[str] | None) -> dict:
    config = load_config(config_path, overrides)
    cfg, run_dir, data = config.model_dump(mode="json"), Path(out).resolve(), str(Path(data).resolve())
    run_dir.mkdir(parents=True, exist_ok=True)
    hyper = prepare_training_run_task(kind, data, str(run_dir), cfg)
    create_table_artifact(key=f"train-{kind}-hyperparameters", table=hyper, description=f"train-{kind} {run_dir}")
    progress = create_progress_artifact(0.0, key=f"train-{kind}-progress", description=f"{run_dir}: steps done")
    started = _start_ray(config)
    tail = _ProgressTail(run_dir, config.train.steps, progress)
    tail.start()
    try:
        fit_training_task(kind, data, str(run_dir), cfg)
    finally:
        tail.stop.set()
        if started:
            import ray

            ray.shutdown()
    update_progress_artifact(progress, 100.0)
    return publish_training_results(kind, run_dir)


def _image_md(path: Path, width: int = 160) -> str:
    data = base64.b64encode(path.read_bytes()).decode()
    return f'<img src="data:image/png;base64,{data}" width="{width}">'


def publish_training_results(kind: str, run_dir: Path) -> dict:
    """Loss curve + validation before/after artifacts; returns the run summary."""
    from chromaflow.training.checkpoint import latest_checkpoint
    from chromaflow.training.report import plot_loss_curve, read_metrics, read_validations

    records, validations = read_metrics(run_dir), read_validations(run_dir)
    plot = plot_loss_curve(run_dir, title=f"train-{kind} loss")
    lines = [f"# train-{kind}: {run_dir}", ""]
    if plot is not None:
        lines += [_image_md(plot, 600), ""]
    if validations:
        first, last = validations[0], validations[-1]
        lines += ["| page | truth | before (step %d) | after (step %d) |" % (first["step"], last["step"]), "|---|---|---|---|"]
        for key in first["pages"]:
            before = run_dir / "validation" / f"step-{first['step']:06d}"
            after = run_dir / "validation" / f"step-{last['step']:06d}"
            lines.append(f"| {key} | {_image_md(before / f'{key}.truth.png')} | {_image_md(before / f'{key}.png')} | "
                         f"{_image_md(after / f'{key}.png')} |")
        lines += ["", "| step | psnr | ssim | flat_color_accuracy |", "|---|---|---|---|"]
        lines += [f"| {v['step']} | {v['mean']['psnr']} | {v['mean']['ssim']} | {v['mean']['flat_color_accuracy']} |"
                  for v in validations]
    create_markdown_artifact(key=f"train-{kind}-results", markdown="\n".join(lines),
                             description=f"train-{kind}: loss curve and validation before/after")
    found = latest_checkpoint(run_dir)
    summary = {"run_dir": str(run_dir), "kind": kind, "steps": records[-1]["step"] if records else 0,
               "first_loss": records[0]["loss"] if records else None, "last_loss": records[-1]["loss"] if records else None,
               "checkpoint": str(found[1]) if found else None, "loss_curve": str(plot) if plot else None,
               "validation": {v["step"]: v["mean"] for v in validations}}
    get_run_logger().info("train-%s done: %s", kind, summary)
    return summary


@flow(name="train-colorizer")
def train_colorizer(data: str, out: str, config_path: str | None = None, overrides: list[str] | None = None) -> dict:
    return _train("colorizer", data, out, config_path, overrides)


@flow(name="train-guided-sr")
def train_guided_sr(data: str, out: str, config_path: str | None = None, overrides: list[str] | None = None) -> dict:
    return _train("guided-sr", data, out, config_path, overrides)
