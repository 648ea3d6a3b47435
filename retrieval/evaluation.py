"""Identity retrieval accuracy on an evaluation dataset (`<identity>/<view>_line.png` +
`<view>_color.png`, see storage/eval_dataset.py).

For every view i: the query is the line art of view i; the pool is the color views of all
identities except view i itself. References go through the same path as a built store
(scaled to colorize.work_size, line art extracted, ColorFlow patches embedded), and the
query is scored exactly like `ReferenceStore.search` (5 query patches, best patch per
reference, mean over query patches). Identities are ranked by their best reference score;
top-k accuracy = the query's identity is among the k best-ranked identities.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

from chromaflow.conf import Config
from chromaflow.models.lines import extract_lines
from chromaflow.storage.eval_dataset import load_image, scan_eval_dataset
from chromaflow.storage.images import ImageError, resize_longest

from .embedders import build_embedder
from chromaflow.models.patches import crop, quadrant_boxes, reference_boxes
from .search import pool_reference_scores

log = logging.getLogger(__name__)


@dataclass
class QueryResult:
    identity: str
    view: str
    ranked_identities: list[str]
    ranked_references: list[str]


def _embed_views(dataset_dir, config: Config):
    dataset = scan_eval_dataset(dataset_dir)
    if len(dataset.identities) < 2:
        raise ValueError(f"{dataset_dir}: retrieval accuracy needs at least 2 identities")
    embedder = build_embedder(config)
    ref_vectors, ref_owner, queries = [], [], []
    views = []
    for identity in dataset.identities:
        for view in identity.views:
            try:
                line_rgb = load_image(view.line_path)
                color = load_image(view.color_path)
            except ImageError as exc:
                log.warning("%s; view skipped", exc)
                continue
            key = f"{identity.name}/{view.name}"
            color = resize_longest(color, config.colorize.work_size)
            ref_lines = extract_lines(color, config.lines).lines
            ref_source = ref_lines if embedder.domain == "lines" else color
            patches = [crop(ref_source, box) for _, box in reference_boxes(color.shape[1], color.shape[0])]
            ref_vectors.append(embedder.embed(patches))
            ref_owner += [len(views)] * len(patches)
            line_rgb = resize_longest(line_rgb, config.colorize.work_size)
            query_source = extract_lines(line_rgb, config.lines).lines if embedder.domain == "lines" else line_rgb
            h, w = query_source.shape[:2]
            q_patches = [crop(query_source, b) for b in quadrant_boxes(w, h)] + [query_source]
            queries.append(embedder.embed(q_patches))
            views.append((identity.name, view.name, key))
    return views, np.concatenate(ref_vectors), np.asarray(ref_owner), queries


def evaluate_retrieval(dataset_dir, config: Config) -> list[QueryResult]:
    views, ref_vectors, ref_owner, queries = _embed_views(dataset_dir, config)
    patch_reference = [views[o][2] for o in ref_owner]
    identity_of = {key: identity for identity, _, key in views}
    results = []
    for i, (identity, view, _) in enumerate(views):
        keep = np.nonzero(ref_owner != i)[0]
        sims = queries[i] @ ref_vectors[keep].T
        order = np.argsort(-sims, axis=1, kind="stable")
        scores = np.take_along_axis(sims, order, axis=1)
        ids = keep[order]
        pooled = pool_reference_scores(scores, ids, patch_reference)
        ranked_refs = sorted(pooled, key=lambda n: (-pooled[n], n))
        ranked_ids: list[str] = []
        for name in ranked_refs:
            if identity_of[name] not in ranked_ids:
                ranked_ids.append(identity_of[name])
        results.append(QueryResult(identity, view, ranked_ids, ranked_refs))
    return results


def retrieval_topk_accuracy(dataset_dir, config: Config) -> dict[str, float]:
    """{"retrieval_top1", "retrieval_top3"}: identity accuracy of retrieval (see module doc)."""
    results = evaluate_retrieval(dataset_dir, config)
    top1 = np.mean([r.ranked_identities[:1] == [r.identity] for r in results])
    top3 = np.mean([r.identity in r.ranked_identities[:3] for r in results])
    return {"retrieval_top1": round(float(top1), 4), "retrieval_top3": round(float(top3), 4)}
