"""Pair-weighted means over several `chromaflow evaluate` runs (e.g. one per identity, run
in parallel on a loaded machine): the same numbers one run over all identities gives,
since metrics.json's overall means are means over pairs.

    python bench/merge_eval_runs.py OUT_ROOT [OUT_ROOT ...]

reads OUT_ROOT/*/metrics.parquet and prints a markdown table, one row per backend and
variant (style/condition): the foreground flat-color accuracy (all pairs and pose pairs
only), background, segment, balloon and lettering scores, style detection and the mean
colorize seconds per page.
"""

from __future__ import annotations

import collections
import glob
import math
import sys

import pyarrow.parquet as pq

KEYS = ("flat_color_accuracy", "background_accuracy", "segment_accuracy", "segment_pixel_accuracy",
        "balloon_paper", "lettering_black", "style_detected")


def mean(rows: list[dict], key: str) -> str:
    values = [r[key] for r in rows if r[key] is not None and not math.isnan(r[key])]
    return f"{sum(values) / len(values):.3f}" if values else "–"


def main(roots: list[str]) -> None:
    rows = [row for root in roots for f in sorted(glob.glob(f"{root}/*/metrics.parquet"))
            for row in pq.read_table(f).to_pylist()]
    groups: dict[tuple, list[dict]] = collections.defaultdict(list)
    for r in rows:
        groups[(r["backend"], r["style"], r["condition"])].append(r)
    print("identities:", ", ".join(sorted({r["identity"] for r in rows})))
    print("| backend | variant | fg acc | pose fg acc | " + " | ".join(KEYS[1:]) + " | pairs | s/page |")
    print("|---" * (len(KEYS) + 5) + "|")
    for (backend, style, condition), rs in sorted(groups.items()):
        pose = [r for r in rs if r["kind"] == "pose"]
        seconds = sum(r["seconds"] for r in rs) / len(rs)
        print(f"| {backend} | {style}/{condition} | {mean(rs, KEYS[0])} | {mean(pose, KEYS[0])} | "
              + " | ".join(mean(rs, k) for k in KEYS[1:]) + f" | {len(rs)} | {seconds:.2f} |")


if __name__ == "__main__":
    main(sys.argv[1:])
