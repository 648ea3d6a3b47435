"""Thin Prefect tasks around the training code (chromaflow/training, flows/train.py)."""

from __future__ import annotations

from prefect import task

from chromaflow.conf import Config


@task(name="plan-training-set")
def plan_training_set_task(source: str, out: str, config_json: dict) -> dict:
    from chromaflow.training.build_set import plan_training_set

    plan = plan_training_set(source, out, Config.model_validate(config_json))
    return {"shards": {split: len(s) for split, s in plan["shards"].items()}, "pages": len(plan["pages"]),
            "skipped": plan["skipped"]}


@task(name="build-training-index", retries=1, retry_delay_seconds=1)
def build_training_index_task(out: str, split: str, config_json: dict) -> str | None:
    from chromaflow.training.build_set import build_index

    return build_index(out, split, Config.model_validate(config_json))


@task(name="build-training-shard", retries=1, retry_delay_seconds=1)
def build_training_shard_task(out: str, split: str, shard: int, config_json: dict) -> dict:
    from chromaflow.training.build_set import build_shard

    return build_shard(out, split, shard, Config.model_validate(config_json))


@task(name="finish-training-set")
def finish_training_set_task(out: str, config_json: dict, stats: list[dict]) -> dict:
    from chromaflow.training.build_set import finish_training_set

    return finish_training_set(out, Config.model_validate(config_json), stats)


@task(name="prepare-training-run")
def prepare_training_run_task(kind: str, data: str, run_dir: str, config_json: dict) -> list[dict]:
    """Check the training set and the base weights before Ray starts; the hyper-parameter rows."""
    from chromaflow.training.builders import TrainingSetupError, resolve_sd15
    from chromaflow.training.dataset import open_training_set

    config = Config.model_validate(config_json)
    dataset = open_training_set(data)
    if dataset.pages("train") == 0:
        raise TrainingSetupError(f"{data}: the training split holds no pages")
    sd15 = resolve_sd15(config, run_dir)
    t = config.train
    rows = {"kind": kind, "data": data, "train pages": dataset.pages("train"),
            "validation pages": dataset.pages("validation"), "sd15": str(sd15), "init_weights": t.init_weights or "scratch",
            "effective batch": t.num_workers * t.batch_size * t.grad_accum}
    rows.update({k: v for k, v in t.model_dump(mode="json").items()
                 if k in ("steps", "num_workers", "batch_size", "grad_accum", "lr", "lr_warmup_steps", "lora_rank",
                          "optimizer", "mixed_precision", "gradient_checkpointing", "ema_decay", "timestep_shift",
                          "query_size", "crop_context", "crop_downsample", "gsrp_crop", "gsrp_scale", "seed")})
    return [{"parameter": k, "value": str(v)} for k, v in rows.items()]


@task(name="fit-on-ray-train")
def fit_training_task(kind: str, data: str, run_dir: str, config_json: dict) -> None:
    from chromaflow.training.ray_train import run_training

    run_training(kind, data, run_dir, Config.model_validate(config_json))
