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
from chromaflow.models.eval_variants import CONDITIONS, STYLES, Case, make_case
from chromaflow.models.lines import extract_lines
from chromaflow.models.metrics import ACCURATE_DELTA_E, delta_e, line_scores, pair_metrics
from chromaflow.storage.eval_dataset import POSE, RECOLOR, EvalDataset, View, load_view
from chromaflow.storage.images import ImageError, resize_longest

log = logging.getLogger(__name__)

METRIC_KEYS = ("flat_color_accuracy", "background_accuracy", "segment_accuracy", "segment_pixel_accuracy",
               "psnr", "ssim", "balloon_paper", "lettering_black", "style_detected")
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
    style: str = "line"
    condition: str = "plain"
    diagnostics: dict = field(default_factory=dict)
    framing: str = ""  # framing cases: "close-up references" or "close-up page"

    @property
    def variant(self) -> str:
        return f"{self.style}/{self.condition}"


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


@dataclass(frozen=True)
class Variants:
    """Which cases every pair is evaluated in: input styles x conditions
    (models/eval_variants.py). The default is the dataset as it is: line art, plain."""

    styles: tuple[str, ...] = ("line",)
    conditions: tuple[str, ...] = ("plain",)

    def __post_init__(self):
        bad = [s for s in self.styles if s not in STYLES] + [c for c in self.conditions if c not in CONDITIONS]
        if bad or not self.styles or not self.conditions:
            raise ValueError(f"unknown evaluation style/condition {', '.join(bad) or '(none given)'}; "
                             f"styles: {', '.join(STYLES)}; conditions: {', '.join(CONDITIONS)}")

    def names(self) -> list[str]:
        return [f"{style}/{condition}" for style in self.styles for condition in self.conditions]


def pair_key(pair: Pair) -> str:
    return f"{pair.identity}/{pair.target.view.name}/{pair.truth.view.name}"


def pair_case(pair: Pair, style: str, condition: str) -> Case:
    """The pair as a case in `style` under `condition` (the plain line case is the pair as is)."""
    return make_case(pair_key(pair), style, condition, pair.target.line_rgb, pair.truth.color,
                     [r.color for r in pair.references])


def case_references(pair: Pair, case: Case, config: Config) -> list[Reference]:
    """References at the colorize work size; their line art as the pipeline extracts it
    (reused from the loaded views unless the condition re-framed them)."""
    work = config.colorize.work_size
    refs = []
    for view, color in zip(pair.references, case.references):
        lines = view.ref_lines if color is view.color else extract_lines(color, config.lines).lines
        refs.append(Reference(identity=pair.identity, name=f"{pair.identity}/{view.view.color_path.name}",
                              color=resize_longest(color, work),
                              lines=resize_longest(lines, work) if max(color.shape[:2]) > work else lines,
                              score=1.0))
    return refs


def colorize_case(pair: Pair, case: Case, backend: str, config: Config,
                  remembered_colors: np.ndarray | None = None) -> tuple[np.ndarray, float, dict]:
    """Run one backend on one case at colorize.work_size, as the pipeline would (with
    `colorize.palette_memory`, the memory of the pair's reference pool, or `remembered_colors`
    when given: a job-wide memory's colors); the result is scaled back to the ground truth's
    size. Returns (RGB output, seconds, the request's diagnostics)."""
    cfg = config.model_copy(deep=True)
    cfg.colorize.backend = backend
    colorizer = build_colorizer(cfg)
    page = resize_longest(case.page, cfg.colorize.work_size)
    art = extract_lines(page, cfg.lines)  # the page's line art, as the pipeline would see it
    refs = case_references(pair, case, cfg)
    if not cfg.colorize.palette_memory:
        remembered_colors = None
    elif remembered_colors is None:
        from chromaflow.models.palette_memory import memory_of_references

        remembered_colors = memory_of_references(refs, cfg.colorize.palette_tolerance).colors([pair.identity])
    request = ColorizeRequest(key=f"{pair.identity}/{pair.target.view.name}", page=page, lines=art.lines,
                              kind=art.kind, references=refs, identities=[pair.identity],
                              remembered_colors=remembered_colors, palette_tolerance=cfg.colorize.palette_tolerance,
                              tone=art.tone)
    start = time.perf_counter()
    out = colorizer.colorize(request)
    seconds = time.perf_counter() - start
    if out.shape[:2] != art.lines.shape:
        raise RuntimeError(f"backend {backend!r} returned {out.shape[:2]} for a {art.lines.shape} page")
    h, w = case.truth.shape[:2]
    if out.shape[:2] != (h, w):
        out = cv2.resize(out, (w, h), interpolation=cv2.INTER_LINEAR)
    return out, seconds, {"style": art.kind, **request.diagnostics}


def colorize_pair(pair: Pair, backend: str, config: Config,
                  remembered_colors: np.ndarray | None = None) -> tuple[np.ndarray, float]:
    """The plain line-art case of a pair (what bench/bench_palette_memory.py measures)."""
    out, seconds, _ = colorize_case(pair, pair_case(pair, "line", "plain"), backend, config, remembered_colors)
    return out, seconds


def balloon_scores(pred: np.ndarray, case: Case) -> dict[str, float]:
    """Balloon interiors keep the paper (CIEDE2000 to the ground truth's white < 10) and
    letters stay black (dark: luminance < 128, and neutral: channel spread < 48)."""
    if case.balloon is None:
        return {"balloon_paper": float("nan"), "lettering_black": float("nan")}
    interior, letters = case.balloon.interior, case.balloon.letters
    de = delta_e(pred[interior], case.truth[interior]) if interior.any() else np.zeros(0)
    px = pred[letters].astype(np.int64)
    dark = (px @ np.array([299, 587, 114]) < 128_000) & (px.max(1) - px.min(1) < 48)
    return {"balloon_paper": float((de < ACCURATE_DELTA_E).mean()) if len(de) else float("nan"),
            "lettering_black": float(dark.mean()) if len(px) else float("nan")}


def evaluate_case(pair: Pair, case: Case, style: str, condition: str, backend: str, config: Config) -> PairResult:
    out, seconds, diagnostics = colorize_case(pair, case, backend, config)
    lines = case.true_lines
    if case.balloon is not None:  # the balloon is scored on its own, not as drawing or paper
        lines = np.where(case.balloon.area, 0, lines).astype(np.uint8)
    metrics = pair_metrics(out, case.truth, lines)
    metrics.update(balloon_scores(out, case))
    metrics["style_detected"] = float(diagnostics.get("style") == style)
    return PairResult(backend, pair.identity, pair.kind, pair.target.view.name,
                      [r.view.name for r in pair.references], metrics, seconds, out, style, condition,
                      sanitize(diagnostics), case.info.get("framing", ""))


def evaluate_pair(pair: Pair, backend: str, config: Config) -> PairResult:
    return evaluate_case(pair, pair_case(pair, "line", "plain"), "line", "plain", backend, config)


def _mean(values: list[float]) -> float:
    finite = [v for v in values if v is not None and not math.isnan(v)]
    return float(np.mean(finite)) if finite else float("nan")


def _summary(results: list[PairResult]) -> dict:
    row = {key: _mean([r.metrics[key] for r in results]) for key in METRIC_KEYS}
    row["pairs"] = len(results)
    return row


def _summaries_by(results: list[PairResult], attribute: str) -> dict[str, dict]:
    """`_summary` per value of a PairResult attribute (first seen first; "" left out)."""
    values = dict.fromkeys(getattr(r, attribute) for r in results)
    return {v: _summary([r for r in results if getattr(r, attribute) == v]) for v in values if v}


def aggregate(results: list[PairResult], line_f1: float, line_f1_gray: float) -> dict:
    """Overall means over pairs, plus the same per identity (and per framing case). Timings
    stay out (they are in metrics.parquet): metrics.json is identical for identical inputs."""
    overall = _summary(results)
    overall["line_f1"] = line_f1
    overall["line_f1_gray"] = line_f1_gray
    overall["identities"] = _summaries_by(results, "identity")
    framings = _summaries_by(results, "framing")
    if framings:  # the two framing cases fail differently: close-up references, close-up pages
        overall["framings"] = framings
    return overall


def aggregate_kinds(results: list[PairResult]) -> dict:
    """Means over the pairs of each identity kind (pose / recolor)."""
    kinds = _summaries_by(results, "kind")
    return {kind: kinds[kind] for kind in (POSE, RECOLOR) if kind in kinds}


def default_backends(config: Config) -> list[str]:
    """The configured backend first, then the baselines it has to beat."""
    return list(dict.fromkeys([config.colorize.backend, "dominant", "gray_rank", "welsh"]))


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
