"""Where the tone style loses points: fg accuracy per screen (kind, period), detection, and
the descreened lightness against the gray variant's (the oracle of descreening).

    OMP_NUM_THREADS=1 python bench/tone_breakdown.py ../shared/data/dev/openmoji \
        --per-identity 2 [--condition warp] [--backend region]

For every pair it colorizes the `gray` and the `tone` case (same geometry), then splits the
tone case's foreground pixels by the screen that printed them (the screen assignment is
re-drawn from the case's seed exactly as models/synth_screens.tone_page draws it; pixels
printed as paper or solid black are their own groups) and reports per group: pixels, fg
accuracy of tone and of gray on the same pixels, and the mean |descreened - true gray|.
"""

from __future__ import annotations

import argparse
import collections
import json
import sys

import cv2
import numpy as np

from chromaflow.conf import Config
from chromaflow.models.descreen import descreen, white_balanced
from chromaflow.models.eval_variants import apply_condition, case_seed
from chromaflow.models.evaluation import colorize_case, load_identity_views, make_pairs, pair_case, pair_key
from chromaflow.models.metrics import ACCURATE_DELTA_E, background_mask, delta_e, line_mask
from chromaflow.models.synth_screens import (
    PAPER_LEVEL, SOLID_LEVEL, SUPERSAMPLE, luminance, random_screens, rotate, rotation_matrix)
from chromaflow.storage.eval_dataset import scan_eval_dataset


def screen_groups(pair, condition: str, case) -> tuple[np.ndarray, list[str]]:
    """Per pixel of the tone case: index of the screen that printed it, -1 paper, -2 solid."""
    key = pair_key(pair)
    geometry = np.random.default_rng(case_seed(key, condition))
    _, truth, _, _, _ = apply_condition(condition, pair.target.line_rgb, pair.truth.color,
                                        [r.color for r in pair.references], geometry)
    rng = np.random.default_rng(case_seed(key, condition, "tone"))
    screens = random_screens(rng, int(rng.integers(1, 4)))
    keys = (truth[..., 0].astype(np.int64) << 16) | (truth[..., 1].astype(np.int64) << 8) | truth[..., 2]
    uniq, inverse = np.unique(keys.ravel(), return_inverse=True)
    which = rng.integers(0, len(screens), len(uniq))[inverse].reshape(truth.shape[:2]).astype(np.int16)
    gray = luminance(truth)
    which[gray >= PAPER_LEVEL] = -1
    which[gray <= SOLID_LEVEL] = -2
    assert [s.describe() for s in screens] == case.info["screens"], "screen draw out of sync with tone_page"
    h, w = truth.shape[:2]
    if any(s.kind == "noise" for s in screens):  # tone_page's noise field, then the scan's turn
        rng.random((h * SUPERSAMPLE + 1, w * SUPERSAMPLE + 1))
    matrix = rotation_matrix((h, w), float(rng.uniform(-1.5, 1.5)))
    which = cv2.warpAffine(which.astype(np.float32), matrix, (w, h), flags=cv2.INTER_NEAREST,
                           borderMode=cv2.BORDER_CONSTANT, borderValue=-1).astype(np.int16)
    return which, [f"{s.kind}/p{s.period:.0f}" for s in screens], matrix


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("dataset")
    ap.add_argument("--per-identity", type=int, default=2)
    ap.add_argument("--condition", default="plain")
    ap.add_argument("--backend", default="region")
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    config = Config()
    dataset = scan_eval_dataset(args.dataset)
    groups = collections.defaultdict(lambda: np.zeros(5))  # pixels, tone ok, gray ok, |dL| sum, count
    rows = []
    for identity in dataset.identities:
        views = load_identity_views(dataset, identity.name, config, [])
        for pair in make_pairs(identity.name, identity.kind, views)[: args.per_identity]:
            tone = pair_case(pair, "tone", args.condition)
            gray = pair_case(pair, "gray", args.condition)
            out_t, _, diag_t = colorize_case(pair, tone, args.backend, config)
            out_g, _, _ = colorize_case(pair, gray, args.backend, config)
            which, names, matrix = screen_groups(pair, args.condition, tone)
            fg = ~line_mask(tone.true_lines) & ~background_mask(tone.truth, tone.true_lines)
            ok_t = delta_e(out_t, tone.truth) < ACCURATE_DELTA_E
            ok_g = rotate(((delta_e(out_g, gray.truth) < ACCURATE_DELTA_E) * 255).astype(np.uint8), matrix,
                          nearest=True) == 255
            ok_l = lightness_swapped_ok(out_t, tone.truth, luminance(tone.truth))
            shade = descreen(cv2.cvtColor(white_balanced(tone.page), cv2.COLOR_RGB2GRAY)).gray
            d_l = np.abs(shade - luminance(tone.truth).astype(np.float32))
            for g in np.unique(which[fg]):
                m = fg & (which == g)
                name = {-1: "paper", -2: "solid"}.get(int(g)) or names[int(g)]
                kind = name.split("/")[0]
                for key in (name, kind, "all"):
                    groups[key] += [m.sum(), ok_t[m].sum(), ok_g[m].sum(), d_l[m].sum(), ok_l[m].sum()]
            row = {"pair": pair_key(pair), "screens": tone.info["screens"], "detected": diag_t.get("style"),
                   "tone_fg": float(ok_t[fg].mean()), "gray_fg": float(ok_g[fg].mean()),
                   "dL": float(d_l[fg].mean()), "found": diag_t.get("screens", [])[:4]}
            rows.append(row)
            print(json.dumps(row), flush=True)
    print(f"{'group':14s} {'pixels':>9s} {'tone':>6s} {'gray':>6s} {'|dL|':>6s} {'tone, true L':>12s}")
    for key in sorted(groups, key=lambda k: (k.count("/"), k)):
        n, t, g, dl, c = groups[key]
        print(f"{key:14s} {int(n):9d} {t / n:6.3f} {g / n:6.3f} {dl / n:6.1f} {c / n:12.3f}")
    det = np.mean([r["detected"] == "tone" for r in rows])
    print(f"pairs {len(rows)}  detected tone {det:.3f}  tone fg {np.mean([r['tone_fg'] for r in rows]):.3f}"
          f"  gray fg {np.mean([r['gray_fg'] for r in rows]):.3f}")
    if args.json:
        json.dump({"rows": rows, "groups": {k: list(v) for k, v in groups.items()}}, open(args.json, "w"), indent=1)
    return 0


def lightness_swapped_ok(out: np.ndarray, truth: np.ndarray, truth_gray: np.ndarray) -> np.ndarray:
    """Accurate pixels of `out` once its lightness is the truth's (chroma kept): what a
    perfect descreening (lightness) would give with the same color choices."""
    from chromaflow.models.colorizers.composite import keep_page_luminance

    swapped = keep_page_luminance(out, cv2.cvtColor(truth_gray, cv2.COLOR_GRAY2RGB))
    return delta_e(swapped, truth) < ACCURATE_DELTA_E


if __name__ == "__main__":
    sys.exit(main())
