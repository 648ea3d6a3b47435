"""BasicPBC clips: colorize every line frame from the clip's one colored keyframe.

    python bench/basicpbc_demo.py [--data ../shared/data/dev/basicpbc] [--out docs/images]

Writes `basicpbc_<clip>.png` (rows: line frames / our colors, keyframe first) and prints a
round-trip check per clip: colors are propagated keyframe -> every frame -> back through
every frame to the keyframe's own line art, and that result is scored against the
keyframe's ground truth (the only ground truth the clips have) with models/metrics.py.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import cv2
import numpy as np

from chromaflow.models.lines import extract_lines
from chromaflow.models.metrics import pair_metrics
from chromaflow.models.propagate import propagate_clip
from chromaflow.storage.images import decode_image, resize_longest

TILE = 320
MAX_TILES = 6


def load(path: Path) -> np.ndarray:
    return decode_image(path.read_bytes(), str(path))


def run_clip(clip: Path, out_dir: Path) -> dict:
    gt_path = sorted((clip / "gt").glob("*.png"))[0]
    line_paths = sorted((clip / "line").glob("*.png"))
    names = [p.name for p in line_paths]
    key_index = names.index(gt_path.name)
    # Walk away from the keyframe: forwards if it is the first frame, else backwards.
    order = list(range(key_index + 1, len(names))) or list(range(key_index - 1, -1, -1))
    key_color = load(gt_path)
    key_page = load(line_paths[key_index])
    key_lines = extract_lines(key_page).lines
    pages = [load(line_paths[i]) for i in order]
    lines = [extract_lines(p).lines for p in pages]
    start = time.perf_counter()
    outputs = propagate_clip(key_color, key_lines, lines, frames_pages=pages)
    seconds = (time.perf_counter() - start) / max(1, len(outputs))
    # Round trip: from the last propagated frame back through every frame to the keyframe's
    # own line art; errors of both directions add up, and the keyframe is the only ground truth.
    back = propagate_clip(outputs[-1], lines[-1], lines[-2::-1] + [key_lines],
                          frames_pages=pages[-2::-1] + [key_page])[-1]
    metrics = pair_metrics(back, key_color, cv2.cvtColor(key_page, cv2.COLOR_RGB2GRAY))
    picks = np.linspace(0, len(outputs) - 1, min(MAX_TILES - 1, len(outputs))).round().astype(int)
    top = [resize_longest(key_page, TILE)] + [resize_longest(pages[i], TILE) for i in picks]
    bottom = [resize_longest(key_color, TILE)] + [resize_longest(outputs[i], TILE) for i in picks]
    strip = np.vstack([np.hstack(top), np.hstack(bottom)])
    out_dir.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(out_dir / f"basicpbc_{clip.name}.png"), cv2.cvtColor(strip, cv2.COLOR_RGB2BGR))
    return {"clip": clip.name, "frames": len(outputs), "seconds_per_frame": round(seconds, 3),
            "roundtrip_flat_color_accuracy": round(metrics["flat_color_accuracy"], 4),
            "roundtrip_segment_accuracy": round(metrics["segment_accuracy"], 4),
            "roundtrip_segment_pixel_accuracy": round(metrics["segment_pixel_accuracy"], 4)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=str(Path(__file__).resolve().parents[2] / "shared/data/dev/basicpbc"))
    parser.add_argument("--out", default=str(Path(__file__).resolve().parents[1] / "docs/images"))
    args = parser.parse_args()
    for clip in sorted(p for p in Path(args.data).iterdir() if (p / "gt").is_dir()):
        print(json.dumps(run_clip(clip, Path(args.out))))


if __name__ == "__main__":
    main()
