"""The evaluation protocol, as plain functions (the Prefect flow in flows/evaluate.py wraps them).

Leave-one-out per identity:
- `pose` identity (one palette, different drawings): colorize line_i with the color images of
  all the identity's OTHER views as the reference pool; ground truth is color_i.
- `recolor` identity (one drawing, different palettes): for every i != k, colorize line_i with
  color_k as the only reference; ground truth is color_k (the drawing is identical, so
  color_k is the exact answer for line_i under palette k).

Every pair is scored with models/metrics.py. A fresh colorizer is built for every pair, so a
backend's memory can never carry one view's ground truth into another view's answer.
"""

from __future__ import annotations

import logging
import math
import re
import time
from dataclasses import dataclass, field

import cv2
import numpy as np

from chromaflow.conf import Config, ConfigError
from chromaflow.models.colorizers import BACKENDS, ColorizeRequest, Reference, build_colorizer
from chromaflow.models.lines import extract_lines
from chromaflow.models.metrics import line_scores, pair_metrics
from chromaflow.storage.eval_dataset import POSE, RECOLOR, EvalDataset, View, load_view
from chromaflow.storage.images import ImageError, resize_longest

log = logging.getLogger(__name__)

METRIC_KEYS = ("flat_color_accuracy", "background_accuracy", "segment_accuracy", "segment_pixel_accuracy",
               "psnr", "ssim")
THUMB_SIZE = 160  # longest side of the report's thumbnails


@dataclass
class LoadedView:
    view: View
    line_rgb: np.ndarray  # the dataset's line image, RGB
    color: np.ndarray  # ground-truth color image, RGB
    ref_lines: np.ndarray  # extract_lines(color image): what the pipeline would see for a reference
    line_f1: float  # line extractor on the color image vs the dataset's line image
    line_f1_gray: float  # same on the color image's grayscale


@dataclass
class Pair:
    identity: str
    kind: str
    target: LoadedView  # whose line art is colorized
    references: list[LoadedView]
    truth: LoadedView  # whose color image is the ground truth


@dataclass
class PairResult:
    backend: str
    identity: str
    kind: str
    view: str
    references: list[str]
    metrics: dict[str, float]
    seconds: float
    output: np.ndarray = field(repr=False)


def load_identity_views(dataset: EvalDataset, identity_name: str, config: Config,
                        problems: list[str]) -> list[LoadedView]:
    """Decode an identity's views; a corrupt or mismatched file is reported in `problems`
    and its view skipped."""
    identity = next(i for i in dataset.identities if i.name == identity_name)
    loaded: list[LoadedView] = []
    for view in identity.views:
        try:
            line_rgb, color = load_view(view)
        except ImageError as exc:
            # Pillow's messages can hold object addresses ("<BytesIO at 0x7f..>"): dropped,
            # so metrics.json stays identical from run to run.
            message = re.sub(r" at 0x[0-9a-fA-F]+", "", str(exc))
            problems.append(f"{message}; view skipped")
            log.warning("%s; view skipped", message)
            continue
        true_lines = cv2.cvtColor(line_rgb, cv2.COLOR_RGB2GRAY)
        ref_lines = extract_lines(color, config.lines).lines
        gray = cv2.cvtColor(cv2.cvtColor(color, cv2.COLOR_RGB2GRAY), cv2.COLOR_GRAY2RGB)
        gray_lines = extract_lines(gray, config.lines).lines
        loaded.append(LoadedView(
            view=view, line_rgb=line_rgb, color=color, ref_lines=ref_lines,
            line_f1=line_scores(ref_lines, true_lines)["f1"],
            line_f1_gray=line_scores(gray_lines, true_lines)["f1"]))
    return loaded


def make_pairs(identity: str, kind: str, views: list[LoadedView]) -> list[Pair]:
    """The leave-one-out pairs of one identity (see module docstring)."""
    pairs: list[Pair] = []
    for i, target in enumerate(views):
        others = [v for j, v in enumerate(views) if j != i]
        if kind == RECOLOR:
            pairs.extend(Pair(identity, kind, target, [ref], ref) for ref in others)
        elif others:
            pairs.append(Pair(identity, kind, target, others, target))
    return pairs


def colorize_pair(pair: Pair, backend: str, config: Config,
                  palette: np.ndarray | None = None) -> tuple[np.ndarray, float]:
    """Run one backend on one pair at colorize.work_size, as the pipeline would (with
    `colorize.palette_memory`, the memory of the pair's reference pool, or `palette` when
    given: a job-wide memory's colors); the result is scaled back to the ground truth's
    size. Returns (RGB output, seconds)."""
    cfg = config.model_copy(deep=True)
    cfg.colorize.backend = backend
    colorizer = build_colorizer(cfg)
    work = cfg.colorize.work_size
    page = resize_longest(pair.target.line_rgb, work)
    art = extract_lines(page, cfg.lines)  # the page's line art, as the pipeline would see it
    refs = [Reference(identity=pair.identity, name=f"{pair.identity}/{r.view.color_path.name}",
                      color=resize_longest(r.color, work),
                      lines=(resize_longest(r.ref_lines, work) if max(r.color.shape[:2]) > work else r.ref_lines),
                      score=1.0)
            for r in pair.references]
    if not cfg.colorize.palette_memory:
        palette = None
    elif palette is None:
        from chromaflow.models.palette_memory import memory_of_references

        palette = memory_of_references(refs, cfg.colorize.palette_tolerance).colors([pair.identity])
    request = ColorizeRequest(key=f"{pair.identity}/{pair.target.view.name}", page=page, lines=art.lines,
                              kind=art.kind, references=refs, identities=[pair.identity],
                              palette=palette, palette_tolerance=cfg.colorize.palette_tolerance)
    start = time.perf_counter()
    out = colorizer.colorize(request)
    seconds = time.perf_counter() - start
    if out.shape[:2] != art.lines.shape:
        raise RuntimeError(f"backend {backend!r} returned {out.shape[:2]} for a {art.lines.shape} page")
    h, w = pair.truth.color.shape[:2]
    if out.shape[:2] != (h, w):
        out = cv2.resize(out, (w, h), interpolation=cv2.INTER_LINEAR)
    return out, seconds


def evaluate_pair(pair: Pair, backend: str, config: Config) -> PairResult:
    out, seconds = colorize_pair(pair, backend, config)
    true_lines = cv2.cvtColor(pair.target.line_rgb, cv2.COLOR_RGB2GRAY)
    metrics = pair_metrics(out, pair.truth.color, true_lines)
    return PairResult(backend, pair.identity, pair.kind, pair.target.view.name,
                      [r.view.name for r in pair.references], metrics, seconds, out)


def _mean(values: list[float]) -> float:
    finite = [v for v in values if v is not None and not math.isnan(v)]
    return float(np.mean(finite)) if finite else float("nan")


def aggregate(results: list[PairResult], line_f1: float, line_f1_gray: float) -> dict:
    """Overall means over pairs, plus the same per identity. Timings stay out
    (they are in metrics.parquet): metrics.json is identical for identical inputs."""
    def summary(rs: list[PairResult]) -> dict:
        row = {key: _mean([r.metrics[key] for r in rs]) for key in METRIC_KEYS}
        row["pairs"] = len(rs)
        return row

    overall = summary(results)
    overall["line_f1"] = line_f1
    overall["line_f1_gray"] = line_f1_gray
    overall["identities"] = {name: summary([r for r in results if r.identity == name])
                             for name in dict.fromkeys(r.identity for r in results)}
    return overall


def aggregate_kinds(results: list[PairResult]) -> dict:
    """Means over the pairs of each identity kind (pose / recolor)."""
    out = {}
    for kind in (POSE, RECOLOR):
        rs = [r for r in results if r.kind == kind]
        if rs:
            out[kind] = {key: _mean([r.metrics[key] for r in rs]) for key in METRIC_KEYS}
            out[kind]["pairs"] = len(rs)
    return out


def default_backends(config: Config) -> list[str]:
    """The configured backend first, then the baselines it has to beat."""
    return list(dict.fromkeys([config.colorize.backend, "palette", "welsh"]))


def check_backends(backends: list[str]) -> None:
    unknown = [b for b in backends if b not in BACKENDS and ":" not in b]
    if unknown:
        # ConfigError: `chromaflow evaluate --backend nope` is a one-line exit 2, not a traceback
        raise ConfigError(f"unknown colorize backend(s) {', '.join(unknown)}; available: {', '.join(sorted(BACKENDS))} "
                         f"(or a plugin as module:Class)")


def thumbnail(rgb: np.ndarray, size: int = THUMB_SIZE) -> np.ndarray:
    return resize_longest(rgb, size)


def sanitize(obj):
    """NaN/inf are not JSON: they become null."""
    if isinstance(obj, dict):
        return {k: sanitize(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [sanitize(v) for v in obj]
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, np.floating):
        return sanitize(float(obj))
    if isinstance(obj, np.integer):
        return int(obj)
    return obj
