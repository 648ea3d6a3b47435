"""Thin Prefect tasks around the evaluation functions (flows/evaluate.py)."""

from __future__ import annotations

from pathlib import Path

from prefect import task
from prefect.artifacts import create_table_artifact

from chromaflow.conf import Config

TABLE_KEYS = ("flat_color_accuracy", "background_accuracy", "segment_accuracy", "segment_pixel_accuracy",
              "psnr", "ssim", "line_f1", "pairs")


@task(name="evaluate-dataset")
def evaluate_dataset(dataset: str | Path, out: str | Path, config: Config, backends: list[str] | None,
                     variants=None) -> dict:
    from chromaflow.flows.evaluate import run_evaluation

    return run_evaluation(dataset, out, config, backends, variants)


def metrics_table(metrics: dict) -> list[dict]:
    """One row per backend: the overall numbers, rounded for reading."""
    rows = []
    for name, values in metrics["backends"].items():
        row = {"backend": name}
        for key in TABLE_KEYS:
            value = values.get(key)
            row[key] = round(value, 4) if isinstance(value, float) else value
        rows.append(row)
    return rows


@task(name="publish-metrics-table")
def publish_metrics_table(metrics: dict) -> None:
    create_table_artifact(key="evaluation-metrics", table=metrics_table(metrics),
                          description=f"Colorization metrics on {metrics['dataset']}")
