"""Evaluation flow: score colorizer backends on a dataset of (line, color) views.

`run_evaluation` (tasks/evaluate.py, re-exported here) is the plain function the CLI's
`chromaflow evaluate` and the tests call; `evaluate_flow` is the Prefect flow around it
that also publishes a table artifact.
"""

from __future__ import annotations

from prefect import flow

from chromaflow.conf import load_config
from chromaflow.models.evaluation import Variants
from chromaflow.tasks.evaluate import evaluate_dataset, publish_metrics_table, run_evaluation

__all__ = ["evaluate_flow", "run_evaluation"]


@flow(name="evaluate")
def evaluate_flow(dataset: str, out: str, config_path: str | None = None, overrides: list[str] | None = None,
                  backends: list[str] | None = None, styles: list[str] | None = None,
                  conditions: list[str] | None = None) -> dict:
    """Prefect flow: run_evaluation plus a table artifact with one row per backend.
    `styles` (line, gray, tone) and `conditions` (plain, warp, framing, balloons) pick the
    evaluated cases (models/eval_variants.py); default: line art, plain."""
    config = load_config(config_path, overrides)
    variants = Variants(tuple(styles or ("line",)), tuple(conditions or ("plain",)))
    metrics = evaluate_dataset(dataset, out, config, backends, variants)
    publish_metrics_table(metrics)
    return metrics
