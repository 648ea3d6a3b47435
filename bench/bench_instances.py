"""Several characters per page: instance recall, identity accuracy, color consistency and
flat-color accuracy of the pipeline on a multi-instance layout (results in docs/quality.md).

    python bench/bench_instances.py DATASET --out DIR [--set key=value ...] [--single]
    python bench/bench_instances.py --build DATASET [--pages 24] [--seed 0]   # the OpenMoji dev chapter

Layout (chromaflow/demo_instances.py writes it):

    DATASET/pages/<page>_line.png        the page's line art (what is colorized)
    DATASET/pages/<page>_color.png       ground truth
    DATASET/pages/<page>_instances.json  [{"identity": "...", "bbox": [x0, y0, x1, y1]}, ...]
    DATASET/refs/<identity>/*.png        the ID pools
    DATASET/single/...                   optional: the same layout, one character per page

The pages run through the real stages as plain functions in this process
(tasks/evaluate_instances.py, also `chromaflow evaluate --instances DIR`). `--single` also runs DATASET/single and
reports the multi-character pages' flat-color accuracy next to the same characters alone.
Writes DIR/metrics.json (and DIR/single/metrics.json).
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

from chromaflow.tasks.evaluate_instances import evaluate_layout  # noqa: E402  (the code lives there)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("dataset", type=Path)
    parser.add_argument("--out", type=Path, default=Path("/tmp/chromaflow-instances"))
    parser.add_argument("--set", dest="overrides", action="append", default=[])
    parser.add_argument("--single", action="store_true", help="also score DATASET/single (one character per page)")
    parser.add_argument("--build", action="store_true", help="build the OpenMoji dev chapter at DATASET and exit")
    parser.add_argument("--pages", type=int, default=24)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    if args.build:
        from chromaflow.demo_instances import build_multi_character_chapter

        build_multi_character_chapter(args.dataset, num_pages=args.pages, seed=args.seed)
        return
    from chromaflow.conf import load_config

    config = load_config(overrides=args.overrides)
    keys = ("instance_recall", "instance_identity_accuracy", "instance_precision", "flat_color_accuracy",
            "consistency_de_median", "consistency_de_p90", "seconds")
    metrics = evaluate_layout(args.dataset, args.out, config)
    print(json.dumps({k: metrics[k] for k in keys}, indent=1))
    if args.single:
        single = evaluate_layout(args.dataset / "single", args.out / "single", config)
        print("single-character pages:", json.dumps({k: single[k] for k in keys}, indent=1))
        print(f"flat-color accuracy multi - single: {metrics['flat_color_accuracy'] - single['flat_color_accuracy']:+.4f}")


if __name__ == "__main__":
    main()
