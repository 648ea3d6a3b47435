"""The evaluation (`run_evaluation`: score colorizer backends on a dataset of (line, color)
views) and thin Prefect tasks around it (the flow is flows/evaluate.py).

Outputs, written atomically into `out`:
- metrics.json     {"backends": {NAME: {overall metrics, "line_f1", "pairs", "identities": {...}}},
                    "kinds": {NAME: {"pose": {...}, "recolor": {...}}}, "problems": [...], ...}
                   for the first variant, and "variants": {NAME: {"STYLE/CONDITION": {same + "kinds"}}}
- metrics.parquet  one row per (backend, variant, pair)
- report.html      image grid (line, reference, every backend, ground truth) + sortable table
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
from prefect import task
from prefect.artifacts import create_table_artifact

from chromaflow.conf import Config
from chromaflow.models.clip_evaluation import evaluate_clip_folders
from chromaflow.models.evaluation import (
    PairResult, Variants, aggregate, aggregate_kinds, check_backends, default_backends, evaluate_case,
    load_identity_views, make_pairs, pair_case, sanitize, thumbnail)
from chromaflow.storage.atomic import write_bytes, write_json
from chromaflow.storage.eval_dataset import scan_eval_dataset

from chromaflow.tasks.evaluate_instances import evaluate_layout
from chromaflow.tasks.evaluation_report import parquet_bytes, render_report

log = logging.getLogger(__name__)

REPORT_MAX_ROWS_PER_IDENTITY = 6  # grid rows per identity; the table lists every pair
TABLE_KEYS = ("flat_color_accuracy", "background_accuracy", "segment_accuracy", "segment_pixel_accuracy",
              "balloon_paper", "lettering_black", "style_detected", "psnr", "ssim", "line_f1", "pairs")


def run_evaluation(dataset: str | Path, out: str | Path, config: Config, backends: list[str] | None = None,
                   variants: Variants | None = None, clips: str | Path | None = None,
                   instances: str | Path | None = None) -> dict:
    """Evaluate `backends` (default: the configured one plus the baselines) on `dataset`
    in every case of `variants` (default: line art as it is), and with `clips` (BasicPBC
    clip folders) episode clips from a keyframe (color and flicker), and with `instances`
    (tasks/evaluate_instances.py) pages with several characters through the stages; write metrics.json,
    metrics.parquet and report.html into `out`; return the metrics dict."""
    out = Path(out)
    variants = variants or Variants()
    backends = list(dict.fromkeys(backends)) if backends else default_backends(config)
    check_backends(backends)
    data = scan_eval_dataset(dataset)
    problems = list(data.problems)
    names = variants.names()
    results: dict[str, dict[str, list[PairResult]]] = {b: {v: [] for v in names} for b in backends}
    line_f1: list[float] = []
    line_f1_gray: list[float] = []
    grid_rows: list[dict] = []
    for identity in data.identities:
        views = load_identity_views(data, identity.name, config, problems)
        line_f1 += [v.line_f1 for v in views]
        line_f1_gray += [v.line_f1_gray for v in views]
        pairs = make_pairs(identity.name, identity.kind, views)
        log.info("%s (%s): %d views, %d pairs", identity.name, identity.kind, len(views), len(pairs))
        for n, pair in enumerate(pairs):
            for v, name in enumerate(names):
                style, condition = name.split("/")
                case = pair_case(pair, style, condition)
                row = {"identity": identity.name, "view": pair.target.view.name, "variant": name,
                       "line": thumbnail(case.page), "reference": thumbnail(case.references[0]),
                       "truth": thumbnail(case.truth), "outputs": {}}
                for backend in backends:
                    result = evaluate_case(pair, case, style, condition, backend, config)
                    results[backend][name].append(result)
                    row["outputs"][backend] = thumbnail(result.output)
                if n < (REPORT_MAX_ROWS_PER_IDENTITY if v == 0 else 1):
                    grid_rows.append(row)
    if not any(rs for per_variant in results.values() for rs in per_variant.values()):
        problems.append(f"{dataset}: no evaluable pairs (every identity needs two readable views)")
    # Identity retrieval (issue 4): line art of view i against every identity's colored
    # views without view i; needs two identities to mean anything.
    retrieval = {}
    if len(data.identities) >= 2:
        from chromaflow.retrieval.evaluation import retrieval_topk_accuracy

        retrieval = retrieval_topk_accuracy(dataset, config)
    clip_results = evaluate_clip_folders(clips, problems) if clips is not None else None
    instance_results = (evaluate_layout(instances, out / "instances", config, problems)
                        if instances is not None else None)
    mean_f1 = float(np.mean(line_f1)) if line_f1 else float("nan")
    mean_f1_gray = float(np.mean(line_f1_gray)) if line_f1_gray else float("nan")
    first = names[0]
    metrics = sanitize({
        "dataset": str(dataset),
        # The first variant (line/plain unless --styles says otherwise), as before variants.
        "variant": first,
        "backends": {b: aggregate(rs[first], mean_f1, mean_f1_gray) for b, rs in results.items()},
        "kinds": {b: aggregate_kinds(rs[first]) for b, rs in results.items()},
        "variants": {b: {name: {**aggregate(rs[name], mean_f1, mean_f1_gray), "kinds": aggregate_kinds(rs[name])}
                         for name in names} for b, rs in results.items()},
        **{k: retrieval[k] for k in ("retrieval_top1", "retrieval_top3") if k in retrieval},
        **({"clips": clip_results} if clip_results is not None else {}),
        **({"instances": instance_results} if instance_results is not None else {}),
        "problems": problems,
        "config_hash": config.section_hash("lines", "colorize"),
    })
    out.mkdir(parents=True, exist_ok=True)
    write_bytes(out / "metrics.parquet", parquet_bytes(results))
    write_bytes(out / "report.html", render_report(metrics, results, grid_rows).encode("utf-8"))
    write_json(out / "metrics.json", metrics)  # last: its presence means the run completed
    return metrics


@task(name="evaluate-dataset")
def evaluate_dataset(dataset: str | Path, out: str | Path, config: Config, backends: list[str] | None,
                     variants=None) -> dict:
    return run_evaluation(dataset, out, config, backends, variants)


def metrics_table(metrics: dict, digits: int | None = 4) -> list[dict]:
    """One row per backend and evaluated variant (style/condition): the overall numbers,
    rounded for reading (digits=None: as measured)."""
    rows = []
    for name, per_variant in metrics["variants"].items():
        for variant, values in per_variant.items():
            row = {"backend": name, "variant": variant}
            for key in TABLE_KEYS:
                value = values.get(key)
                row[key] = round(value, digits) if isinstance(value, float) and digits is not None else value
            rows.append(row)
    return rows


@task(name="publish-metrics-table")
def publish_metrics_table(metrics: dict) -> None:
    create_table_artifact(key="evaluation-metrics", table=metrics_table(metrics),
                          description=f"Colorization metrics on {metrics['dataset']}")
