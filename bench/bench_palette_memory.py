"""Cross-page color consistency with and without the palette memory, on real line art.

    python bench/bench_palette_memory.py [--dataset ../shared/data/dev/openmoji] [--shift 3 7]

Real reference pools are colored by several hands: the same jacket arrives as a few nearby
shades. This rebuilds that situation from the dev set: every `pose` identity's color views
are re-colored "by another hand" (each flat color of each view moved by a random CIELAB
offset of --shift units, seeded, flat colors stay flat), then every view's line art is
colorized leave-one-out from the other re-colored views (the evaluation protocol), once
without and once with the palette memory: by default one memory per identity built from its
whole re-colored pool, as a job builds it once from its reference store (`--memory pair`:
each pair's own pool, what `chromaflow evaluate` does).

Per identity and ground-truth part (a flat color of the truth covering >= 1% of the page),
each page's modal output color inside the part is collected. Reported:
- `spread`: mean CIELAB distance between the parts' modal colors on different pages
  (0 = every page paints the part identically);
- `shades/part`: distinct modal colors per part over the pages;
- `fg_acc`: flat-color accuracy against the original (un-shifted) truth, to show the
  memory costs no accuracy.
Only pages where the part came out within ACCURATE of its truth count for spread and
shades (a mis-colored part is an accuracy problem, not a consistency one).
"""

from __future__ import annotations

import argparse
import itertools
import json
import statistics
import sys
import time
from pathlib import Path

import cv2
import numpy as np

from chromaflow.conf import load_config
from chromaflow.models.colorizers import Reference
from chromaflow.models.evaluation import colorize_pair, load_identity_views, make_pairs
from chromaflow.models.metrics import pair_metrics
from chromaflow.models.segmentation import flat_colors, rgb_to_lab
from chromaflow.models.palette_memory import memory_of_references
from chromaflow.storage.eval_dataset import POSE, scan_eval_dataset

ACCURATE = 20.0  # CIELAB (8-bit scale) distance from the truth within which a part counts as colored right
PART_SHARE = 0.01


def recolor_by_another_hand(color: np.ndarray, rng: np.random.Generator, shift: tuple[float, float]) -> np.ndarray:
    """Every flat color (>= MIN_PALETTE_SHARE of the image) moved by a random CIELAB offset
    of length in [shift]; anti-aliased edge pixels and white stay."""
    out = color.copy()
    for rgb in sorted(flat_colors(color, np.ones(color.shape[:2], bool))):
        if min(rgb) >= 250:
            continue
        direction = rng.normal(size=3)
        lab = rgb_to_lab(np.array([rgb]))[0] + direction / np.linalg.norm(direction) * rng.uniform(*shift)
        new = cv2.cvtColor(np.clip(np.rint(lab), 0, 255).astype(np.uint8)[None, None], cv2.COLOR_LAB2RGB)[0, 0]
        out[np.all(color == rgb, axis=2)] = new
    return out


def modal_colors(out: np.ndarray, truth: np.ndarray, lines: np.ndarray) -> dict[tuple, tuple]:
    """Ground-truth part (flat truth color) -> the output's most common color inside it."""
    paper = cv2.erode((lines > 200).astype(np.uint8), np.ones((5, 5), np.uint8)) > 0
    parts = {}
    for rgb, share in flat_colors(truth, paper).items():
        if share < PART_SHARE or min(rgb) >= 250:
            continue
        px = out[paper & np.all(truth == rgb, axis=2)]
        values, counts = np.unique(px, axis=0, return_counts=True)
        parts[rgb] = tuple(int(v) for v in values[counts.argmax()])
    return parts


def lab_distance(a, b) -> float:
    return float(np.linalg.norm(rgb_to_lab(np.array([a])) - rgb_to_lab(np.array([b]))))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--dataset", default=str(Path(__file__).resolve().parents[1].parent / "shared/data/dev/openmoji"))
    ap.add_argument("--shift", type=float, nargs=2, default=(3.0, 7.0))
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--memory", choices=["job", "pair"], default="job",
                    help="job: one memory per identity pool (the pipeline); pair: each pair's own pool")
    ap.add_argument("--tolerance", type=float, default=None, help="colorize.palette_tolerance (default: config)")
    ap.add_argument("--json", help="also write the results here")
    args = ap.parse_args()
    config = load_config(overrides=[f"colorize.palette_tolerance={args.tolerance}"] if args.tolerance else None)
    tol = config.colorize.palette_tolerance
    dataset = scan_eval_dataset(args.dataset)
    rng = np.random.default_rng(args.seed)
    rows, started = [], time.perf_counter()
    for identity in (i for i in dataset.identities if i.kind == POSE):
        views = load_identity_views(dataset, identity.name, config, [])
        truths = {v.view.name: v.color for v in views}
        for v in views:
            v.color = recolor_by_another_hand(v.color, rng, tuple(args.shift))
        # One memory for the identity's whole re-colored pool, as a job builds it once from its
        # reference store (colors only: a page's own view never joins its reference pool).
        pool = [Reference(identity.name, f"{identity.name}/{v.view.name}", v.color, v.ref_lines) for v in views]
        job_memory = memory_of_references(pool, tol).colors([identity.name]) if args.memory == "job" else None
        result = {"identity": identity.name, "pages": len(views)}
        for use_memory in (False, True):
            cfg = config.model_copy(deep=True)
            cfg.colorize.palette_memory = use_memory
            parts: dict[tuple, list[tuple]] = {}
            accuracy = []
            for pair in make_pairs(identity.name, POSE, views):
                out, _ = colorize_pair(pair, "region", cfg, remembered_colors=job_memory)
                truth = truths[pair.truth.view.name]
                lines = cv2.cvtColor(pair.target.line_rgb, cv2.COLOR_RGB2GRAY)
                accuracy.append(pair_metrics(out, truth, lines)["flat_color_accuracy"])
                for part, got in modal_colors(out, truth, lines).items():
                    if lab_distance(got, part) <= ACCURATE:
                        parts.setdefault(part, []).append(got)
            spreads = [lab_distance(a, b) for got in parts.values() for a, b in itertools.combinations(got, 2)]
            key = "memory" if use_memory else "plain"
            result[key] = {"spread": statistics.fmean(spreads) if spreads else 0.0,
                           "shades_per_part": statistics.fmean(len(set(g)) for g in parts.values()),
                           "fg_acc": statistics.fmean(accuracy), "parts": len(parts)}
        rows.append(result)
        print(json.dumps(result), flush=True)
    total = {key: {m: statistics.fmean(r[key][m] for r in rows) for m in ("spread", "shades_per_part", "fg_acc")}
             for key in ("plain", "memory")}
    print("\n| identity | pages | spread plain | spread memory | shades/part plain | shades/part memory "
          "| fg_acc plain | fg_acc memory |\n|---|---|---|---|---|---|---|---|")
    for r in rows + [{"identity": "**mean**", "pages": sum(r["pages"] for r in rows), **total}]:
        p, m = r["plain"], r["memory"]
        print(f"| {r['identity']} | {r['pages']} | {p['spread']:.2f} | {m['spread']:.2f} | {p['shades_per_part']:.2f} "
              f"| {m['shades_per_part']:.2f} | {p['fg_acc']:.3f} | {m['fg_acc']:.3f} |")
    print(f"\n{time.perf_counter() - started:.0f} s; shift {args.shift}, tolerance {tol}, memory {args.memory}, command: "
          f"python bench/bench_palette_memory.py {' '.join(sys.argv[1:])}")
    if args.json:
        Path(args.json).write_text(json.dumps({"rows": rows, "mean": total}, indent=2))


if __name__ == "__main__":
    main()
