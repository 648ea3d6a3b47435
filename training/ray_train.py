"""Ray Train wiring: one `TorchTrainer` runs `loop.train_worker` on N workers with DDP
(NCCL on GPUs, gloo on CPUs). The same call covers 1 CPU worker (tests) and many GPUs on
several nodes (`ray start --head` / `ray start --address=HEAD:6379`, then
`--set ray.address=auto`; RUN_DIR and DATA on storage every node sees, docs/training.md).

Checkpoints are written by rank 0 into RUN_DIR/checkpoints in the ColorFlow layout (not
Ray's own checkpoint folders), and every (re)started worker resumes from the newest one:
after a driver kill (`chromaflow train-colorizer` again) and after a worker failure
(`train.max_failures` restarts inside one fit).
"""

from __future__ import annotations

from pathlib import Path

from chromaflow.conf import Config


class TrainingError(RuntimeError):
    """A training run failed; str() is one line."""


def worker_main(loop_config: dict) -> None:
    """Ray Train's train_loop_per_worker."""
    import ray.train
    import ray.train.torch

    from .loop import WorkerContext, train_worker

    context = ray.train.get_context()
    ctx = WorkerContext(rank=context.get_world_rank(), world_size=context.get_world_size(),
                        device=ray.train.torch.get_device(),
                        prepare=lambda module: ray.train.torch.prepare_model(module, move_to_device=False),
                        report=lambda metrics: ray.train.report(metrics))
    train_worker(loop_config["kind"], loop_config["data"], loop_config["run_dir"], loop_config["config"], ctx)


def use_gpu(config: Config) -> bool:
    setting = config.train.use_gpu
    if setting != "auto":
        return bool(setting)
    import ray

    return ray.cluster_resources().get("GPU", 0) >= config.train.num_workers


def _one_line(exc: BaseException) -> str:
    cause = exc
    while cause.__cause__ is not None:
        cause = cause.__cause__
    lines = [line for line in str(cause).strip().splitlines() if line.strip()]
    return f"{type(cause).__name__}: {lines[-1] if lines else ''}"


def run_training(kind: str, data: str | Path, run_dir: str | Path, config: Config) -> None:
    """Fit on the Ray cluster this process is connected to (ray.init happened before)."""
    from ray.train import FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchConfig, TorchTrainer

    run_dir = Path(run_dir).resolve()
    gpu = use_gpu(config)
    resources = {"CPU": config.train.cpus_per_worker, **({"GPU": 1} if gpu else {})}
    trainer = TorchTrainer(
        worker_main,
        train_loop_config={"kind": kind, "data": str(Path(data).resolve()), "run_dir": str(run_dir),
                           "config": config.model_dump(mode="json")},
        scaling_config=ScalingConfig(num_workers=config.train.num_workers, use_gpu=gpu, resources_per_worker=resources),
        run_config=RunConfig(name=f"train-{kind}", storage_path=str(run_dir / "ray"),
                             failure_config=FailureConfig(max_failures=config.train.max_failures)),
        torch_config=TorchConfig(backend="nccl" if gpu else "gloo"),
    )
    try:
        trainer.fit()
    except Exception as exc:  # Ray wraps the worker's error; report its root cause in one line
        raise TrainingError(f"train-{kind} {run_dir}: {_one_line(exc)}") from exc
