"""Clip evaluation: colorize a clip's line frames from one colored keyframe with the
temporal colorizer (models/propagate.py) and score the result: color metrics against
ground truth where it exists (models/metrics.py) and flicker (models/flicker.py) beside the
ground truth's own flicker.

`evaluate_clip` is the plain entry (bench/bench_episodes.py); `evaluate_clip_folders` is
what `chromaflow evaluate --clips DIR` runs (metrics.json "clips"). A clip folder has the BasicPBC layout: `line/NNNN.png` (line
frames in order) and `gt/NNNN.png` (colored ground truth for some of them, same names);
the first ground-truth frame is the keyframe.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from chromaflow.storage.images import ImageError, decode_image

from .colorizers.base import Colorizer
from .flicker import clip_flicker
from .lines import extract_lines
from .metrics import pair_metrics
from .propagate import propagate_clip

METRICS = ("flat_color_accuracy", "segment_accuracy", "psnr")


def load_clip(folder: str | Path) -> tuple[list[np.ndarray], dict[int, np.ndarray]]:
    """(line frames, {frame index: ground truth}) of a BasicPBC-layout clip folder."""
    folder = Path(folder)
    paths = sorted((folder / "line").glob("*.png"))
    if not paths:
        raise FileNotFoundError(f"{folder}/line: no PNG frames")
    names = {p.name: i for i, p in enumerate(paths)}
    frames = [decode_image(p.read_bytes(), str(p)) for p in paths]
    gt = {names[p.name]: decode_image(p.read_bytes(), str(p)) for p in sorted((folder / "gt").glob("*.png"))
          if p.name in names}
    if not gt:
        raise FileNotFoundError(f"{folder}/gt: no ground truth frame matching a line frame")
    return frames, gt


def propagate_from_keyframe(pages: list[np.ndarray], lines: list[np.ndarray], key: int, key_color: np.ndarray,
                            colorizer: Colorizer | None = None) -> list[np.ndarray]:
    """Every frame colored: forwards from the keyframe, then backwards from it."""
    out: list[np.ndarray | None] = [None] * len(pages)
    out[key] = key_color
    after = list(range(key + 1, len(pages)))
    before = list(range(key - 1, -1, -1))
    for order in (after, before):
        if order:
            colored = propagate_clip(key_color, lines[key], [lines[i] for i in order], colorizer,
                                     frames_pages=[pages[i] for i in order])
            for i, color in zip(order, colored):
                out[i] = color
    return out  # type: ignore[return-value]


def evaluate_clip(frames: list[np.ndarray], gt: dict[int, np.ndarray], name: str = "clip",
                  colorizer: Colorizer | None = None) -> dict:
    """Scores of one clip. `frames`: RGB line frames in order; `gt`: ground truth by frame
    index (at least one: the first is the keyframe; consecutive ones give the ground
    truth's own flicker). Flicker is measured with the line art as the flow guide, for the
    output over all frame pairs and, where ground truth exists for both frames of a pair,
    for output and ground truth over those same pairs (`flicker_ratio` = output / gt)."""
    key = min(gt)
    lines = [extract_lines(page).lines for page in frames]
    started = time.perf_counter()
    colored = propagate_from_keyframe(frames, lines, key, gt[key], colorizer)
    seconds = (time.perf_counter() - started) / max(1, len(frames) - 1)
    result: dict = {"clip": name, "frames": len(frames), "ground_truth_frames": len(gt),
                    "seconds_per_frame": round(seconds, 3), **clip_flicker(colored, lines).to_dict()}
    scored = [pair_metrics(colored[i], gt[i], lines[i]) for i in sorted(gt) if i != key]
    for metric in METRICS:
        if scored:
            result[metric] = round(float(np.mean([s[metric] for s in scored])), 4)
    pairs = [i for i in sorted(gt) if i - 1 in gt]
    if pairs:
        ours = [clip_flicker([colored[i - 1], colored[i]], [lines[i - 1], lines[i]]).mean for i in pairs]
        truth = [clip_flicker([gt[i - 1], gt[i]], [lines[i - 1], lines[i]]).mean for i in pairs]
        result.update(flicker_on_gt_pairs=round(float(np.mean(ours)), 4), gt_flicker=round(float(np.mean(truth)), 4),
                      flicker_ratio=round(float(np.mean(ours)) / max(float(np.mean(truth)), 1e-6), 3))
    return result


def evaluate_clip_folder(folder: str | Path, colorizer: Colorizer | None = None) -> dict:
    frames, gt = load_clip(folder)
    return evaluate_clip(frames, gt, Path(folder).name, colorizer)


def evaluate_clip_folders(root: str | Path, problems: list[str], colorizer: Colorizer | None = None) -> list[dict]:
    """Scores of every clip under `root`: root itself when it holds `line/`, else each of its
    subfolders that does. A clip that cannot be read is one line in `problems`."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: clip folder does not exist")
    folders = [root] if (root / "line").is_dir() else sorted(p for p in root.iterdir() if (p / "line").is_dir())
    if not folders:
        raise FileNotFoundError(f"{root}: no clip folders (each needs line/ and gt/)")
    results = []
    for folder in folders:
        try:
            results.append(evaluate_clip_folder(folder, colorizer))
        except (FileNotFoundError, ImageError) as exc:
            problems.append(f"{exc}; clip skipped")
    return results
