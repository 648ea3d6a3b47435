"""Retrieval in the loop: identity assignment -> restricted retrieval -> region colorizer,
scored against the truth, for several `retrieval.min_identity_confidence` values.

    python bench/bench_retrieve_and_colorize.py [--dataset ../shared/data/dev/openmoji] [--thresholds 0.5 0.6 0.7 0.8]

For every view of the dataset: the query is its line art; the pool is the color views of
ALL identities except the view itself (as `chromaflow evaluate`'s retrieval_top1/top3). The
query is scored like `ReferenceStore.search` (5 patches, pooled per reference); identities are
assigned from the vote shares with the threshold; an assigned identity restricts the
references to its pool, "unknown" keeps all pools; the top_k references are colorized with
the default config (region backend, stroke-fit weighting) and compared with the view's
color image (foreground flat-color accuracy). A wrong assignment restricts the page to the
wrong character's pool, so its colors are lost; "unknown" leaves the choice to the colorizer.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import cv2
import numpy as np

from chromaflow.conf import load_config
from chromaflow.models.colorizers import ColorizeRequest, Reference, build_colorizer
from chromaflow.models.lines import extract_lines
from chromaflow.models.metrics import pair_metrics
from chromaflow.retrieval.evaluation import _embed_views
from chromaflow.retrieval.identity import UNKNOWN, assign_identities, identity_votes
from chromaflow.retrieval.search import pool_reference_scores
from chromaflow.storage.eval_dataset import load_image, scan_eval_dataset
from chromaflow.storage.images import resize_longest


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--dataset", default=str(Path(__file__).resolve().parents[1].parent / "shared/data/dev/openmoji"))
    ap.add_argument("--thresholds", type=float, nargs="+", default=[0.5, 0.6, 0.7, 0.8])
    args = ap.parse_args()
    config = load_config()
    r, work = config.retrieval, config.colorize.work_size
    started = time.perf_counter()
    views, ref_vectors, ref_owner, queries = _embed_views(args.dataset, config)
    patch_reference = [views[o][2] for o in ref_owner]
    identity_of = {key: ident for ident, _, key in views}
    files = {f"{i.name}/{v.name}": v for i in scan_eval_dataset(args.dataset).identities for v in i.views}
    images: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]] = {}  # key -> (line rgb, color, color's lines)
    for key, view in files.items():
        color = resize_longest(load_image(view.color_path), work)
        images[key] = (load_image(view.line_path), color, extract_lines(color, config.lines).lines)
    colorizer = build_colorizer(config)
    rows = []
    for threshold in args.thresholds:
        assigned = wrong = 0
        accuracy = []
        for i, (identity, _, key) in enumerate(views):
            keep = np.nonzero(ref_owner != i)[0]
            sims = queries[i] @ ref_vectors[keep].T
            order = np.argsort(-sims, axis=1, kind="stable")
            scores, ids = np.take_along_axis(sims, order, axis=1), keep[order]
            pooled = pool_reference_scores(scores, ids, patch_reference)
            votes = identity_votes(pooled, identity_of, r.identity_votes, r.identity_temperature)
            chosen = assign_identities(votes, threshold)
            if chosen != [UNKNOWN]:
                assigned += 1
                wrong += chosen[0] != identity
                pooled = {n: s for n, s in pooled.items() if identity_of[n] in chosen}
            top = sorted(pooled, key=lambda n: (-pooled[n], n))[:r.top_k]
            line_rgb, truth, _ = images[key]
            page = resize_longest(line_rgb, work)
            art = extract_lines(page, config.lines)
            refs = [Reference(identity_of[n], n, images[n][1], images[n][2], score=float(pooled[n])) for n in top]
            out = colorizer.colorize(ColorizeRequest(key, page, art.lines, art.kind, refs, chosen, tone=art.tone))
            out = cv2.resize(out, (truth.shape[1], truth.shape[0]), interpolation=cv2.INTER_LINEAR)
            lines = cv2.cvtColor(line_rgb, cv2.COLOR_RGB2GRAY)
            accuracy.append(pair_metrics(out, truth, lines)["flat_color_accuracy"])
        rows.append((threshold, assigned, wrong, statistics.fmean(accuracy)))
        print(f"threshold {threshold}: assigned {assigned}/{len(views)}, wrong {wrong}, "
              f"fg acc {rows[-1][3]:.3f}", flush=True)
    print("\n| min_identity_confidence | pages assigned | wrongly assigned | fg acc (retrieved refs) |\n|---|---|---|---|")
    for threshold, assigned, wrong, acc in rows:
        print(f"| {threshold} | {assigned}/{len(views)} | {wrong} | {acc:.3f} |")
    print(f"\n{time.perf_counter() - started:.0f} s; command: python bench/bench_retrieve_and_colorize.py "
          f"{' '.join(sys.argv[1:])}")


if __name__ == "__main__":
    main()
