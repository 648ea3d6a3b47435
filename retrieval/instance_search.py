"""Retrieval per character instance (pages with several characters).

Each instance (stages/instances.py) is searched as a drawing of its own: its crop with
everything outside its mask erased to paper, so neither its neighbors' strokes nor the
panel's frame take part. Then:

- Pieces of one stroke group (the segmenter split a silhouette at a neck,
  models/instances/necks.py, or a part stayed apart) are joined again when they are one
  character: one is far smaller than the other, both are confidently the same identity,
  or together they are confidently an identity with a higher share than either piece
  alone (a head cut from its shoulders). Otherwise they stay two.
- An instance's identity scores average its crop's votes with its head's (the top of the
  drawing, retrieval/head_votes.py: who a character is shows in its face and hair, the
  whole crop is led by the pose). Identities are assigned jointly per page
  (models/instances/assignment.py), or, in an episode, per track through the scene
  (models/instances/tracking.py).
- An identified instance's references are that identity's own (its pool only); an
  unknown one keeps the references of the search over all pools.
- For backends that read per-quadrant patches (diffusion), `identity_quadrants` searches
  each quadrant of a panel restricted to the identities whose instances lie in it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from chromaflow.models.instances.assignment import UNKNOWN, assign_instance_identities, track_scores
from chromaflow.models.instances.tracking import Observation, track_instances

from .head_votes import combined_votes, head_votes

CROP_MARGIN = 0.04  # share of the instance's size kept around it in its crop
SMALL_PIECE = 0.15  # a piece under this share of another piece of its group is a part of it
QUADRANT_SHARE = 0.1  # an instance is "in" a quadrant when this share of it lies there
TRACK_MAJORITY = 0.5  # a track's identity needs this share of its frames' confident votes


@dataclass
class InstanceQuery:
    pieces: list[int]  # ids in the page's instance label map
    group: int
    mask: np.ndarray  # bool, page size
    vectors: np.ndarray  # the crop's query vectors (4 quadrants + full view)
    found: dict  # unrestricted search result (identity_scores: vote shares over all pools)

    @property
    def box(self) -> list[int]:
        ys, xs = np.nonzero(self.mask)
        return [int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1]


def masked_crop(lines: np.ndarray, page: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The instance's box (plus a margin) of the line art and the page, paper outside its mask."""
    ys, xs = np.nonzero(mask)
    margin = int(CROP_MARGIN * max(xs.max() - xs.min(), ys.max() - ys.min())) + 1
    x0, y0 = max(0, xs.min() - margin), max(0, ys.min() - margin)
    x1, y1 = min(mask.shape[1], xs.max() + 1 + margin), min(mask.shape[0], ys.max() + 1 + margin)
    keep = mask[y0:y1, x0:x1]
    crop_lines = np.where(keep, lines[y0:y1, x0:x1], 255).astype(np.uint8)
    crop_page = np.where(keep[..., None], page[y0:y1, x0:x1], 255).astype(np.uint8)
    return crop_lines, crop_page


def make_query(store, lines: np.ndarray, page: np.ndarray, mask: np.ndarray, pieces: list[int], group: int,
               top_k: int) -> InstanceQuery:
    """The instance's search over all pools; its identity scores average the whole crop's
    votes with its head's (retrieval/head_votes.py)."""
    crop_lines, crop_page = masked_crop(lines, page, mask)
    vectors = store.embed_page(crop_lines, crop_page)[0]
    found = store.search_vectors(vectors, top_k, None, auto_assign=False)
    head = head_votes(store, crop_lines, crop_page, store.config.retrieval.identity_temperature)
    found = {**found, "crop_scores": found["identity_scores"], "head_scores": head,
             "identity_scores": combined_votes(found["identity_scores"], head)}
    return InstanceQuery(pieces, group, mask, vectors, found)


def confident_identity(scores: dict[str, float], min_confidence: float) -> str | None:
    named = {k: v for k, v in scores.items() if k not in ("", UNKNOWN)}
    if not named:
        return None
    best = max(sorted(named), key=lambda k: named[k])
    return best if named[best] >= min_confidence else None


def page_queries(store, lines: np.ndarray, page: np.ndarray, labels: np.ndarray, records: list[dict],
                 top_k: int, min_confidence: float) -> list[InstanceQuery]:
    """One query per character: the page's instances searched, and pieces of one stroke
    group (split at a neck, or parts drawn apart) joined again when they are one character
    (`_one_character`)."""
    queries = [make_query(store, lines, page, labels == r["id"], [r["id"]], r["group"], top_k) for r in records]
    changed = True
    while changed:  # join one pair at a time; the joined query may join further
        changed = False
        pairs = [(i, j) for i in range(len(queries)) for j in range(i + 1, len(queries))
                 if queries[i].group == queries[j].group]
        for i, j in pairs:
            joined = _one_character(store, lines, page, queries[i], queries[j], top_k, min_confidence)
            if joined is not None:
                queries = [q for k, q in enumerate(queries) if k not in (i, j)] + [joined]
                changed = True
                break
    return sorted(queries, key=lambda q: q.pieces[0])  # the segmenter's order


def _one_character(store, lines, page, a: InstanceQuery, b: InstanceQuery, top_k: int,
                   min_confidence: float) -> InstanceQuery | None:
    """The joined query when two pieces of one stroke group are one character: one far
    smaller than the other (SMALL_PIECE), both confidently
    the same identity, or together confidently an identity with a higher share than either
    piece has alone (a head and its shoulders look more like the character than either
    does; a square head alone may even look like someone else). Two characters side by
    side stay apart: together they look like neither as much as each does alone."""
    union = make_query(store, lines, page, a.mask | b.mask, sorted(a.pieces + b.pieces), a.group, top_k)
    small, big = sorted((a.mask.sum(), b.mask.sum()))
    if small < SMALL_PIECE * big:
        return union  # a hand, an ear, a tail: too small to be a character next to this one
    ia = confident_identity(a.found["identity_scores"], min_confidence)
    if ia and ia == confident_identity(b.found["identity_scores"], min_confidence):
        return union
    iu = confident_identity(union.found["identity_scores"], min_confidence)
    best = max(_best_share(a), _best_share(b))
    return union if iu and union.found["identity_scores"][iu] > best else None


def _best_share(query: InstanceQuery) -> float:
    return max([v for k, v in query.found["identity_scores"].items() if k not in ("", UNKNOWN)], default=0.0)


def instance_result(store, query: InstanceQuery, identity: str, top_k: int) -> dict:
    """What the colorize stage needs of one instance: its pieces, identity and references
    (the identity's own pool only; all pools for an unknown one)."""
    found = query.found
    if identity != UNKNOWN:
        found = store.search_vectors(query.vectors, top_k, [identity])
        found = {**found, "references": [r for r in found["references"] if r["identity"] == identity],
                 "quadrants": [[h for h in hits if h["identity"] == identity] for hits in found["quadrants"]]}
    return {"pieces": query.pieces, "box": query.box, "group": query.group, "identity": identity,
            "identity_scores": query.found["identity_scores"], "crop_scores": query.found["crop_scores"],
            "head_scores": query.found["head_scores"], "references": found["references"],
            "quadrants": found["quadrants"]}


def search_page_instances(store, lines, page, labels, records, top_k: int, min_confidence: float,
                          configured: list[str] | None) -> tuple[list[dict], list[InstanceQuery]]:
    """Per-instance results of one page, identities assigned jointly."""
    queries = page_queries(store, lines, page, labels, records, top_k, min_confidence)
    identities = assign_instance_identities([q.found["identity_scores"] for q in queries], min_confidence, configured)
    return [instance_result(store, q, ident, top_k) for q, ident in zip(queries, identities)], queries


def search_scene_instances(store, frames: list[tuple], top_k: int, min_confidence: float,
                           configured: list[str] | None, max_cost: float, appearance_weight: float
                           ) -> list[list[dict]]:
    """Per-instance results of every frame of one scene: frames = [(lines, page, labels,
    records)]; instances are tracked through the scene and each track takes one identity
    from the majority of its frames' confident votes (tracks assigned jointly)."""
    queries = [page_queries(store, l, p, lab, rec, top_k, min_confidence) for l, p, lab, rec in frames]
    observations = [[Observation(q.mask, _unit(q.vectors[-1])) for q in frame] for frame in queries]
    tracks = track_instances(observations, [f[0] for f in frames], max_cost, appearance_weight)
    votes: dict[int, list[dict]] = {}
    for frame, ids in zip(queries, tracks):
        for q, t in zip(frame, ids):
            votes.setdefault(t, []).append(q.found["identity_scores"])
    order = sorted(votes)
    decided = assign_instance_identities([track_scores(votes[t], min_confidence) for t in order], TRACK_MAJORITY,
                                         configured)
    identity_of = dict(zip(order, decided))
    return [[{**instance_result(store, q, identity_of[t], top_k), "track": int(t)} for q, t in zip(frame, ids)]
            for frame, ids in zip(queries, tracks)]


def _unit(v: np.ndarray) -> np.ndarray:
    return v / max(float(np.linalg.norm(v)), 1e-12)


def identity_quadrants(store, vectors: np.ndarray, quadrant_boxes: list, panel_box, instance_masks: list,
                       identities: list[str], top_k: int) -> tuple[list[list[str]], list[list[dict]] | None]:
    """Per quadrant of a panel: the identities whose instances lie in it and that quadrant's
    patches searched in those pools only (all pools where none lies). quadrant_boxes are
    in panel coordinates; masks are page-size. Returns (identities, hits) with hits None
    when no quadrant holds an identified instance."""
    x0, y0 = panel_box[0], panel_box[1]
    present: list[list[str]] = []
    for qx0, qy0, qx1, qy1 in quadrant_boxes:
        names = set()
        for mask, identity in zip(instance_masks, identities):
            inside = mask[y0 + qy0:y0 + qy1, x0 + qx0:x0 + qx1].sum()
            if identity != UNKNOWN and inside >= QUADRANT_SHARE * max(1, mask.sum()):
                names.add(identity)
        present.append(sorted(names))
    if not any(present):
        return present, None
    cache: dict[tuple, dict] = {}
    hits = []
    for q, names in enumerate(present):
        key = tuple(names)
        if key not in cache:
            cache[key] = store.search_vectors(vectors, top_k, list(names) if names else None, auto_assign=False)
        found = cache[key]["quadrants"][q]
        hits.append([h for h in found if not names or h["identity"] in names])
    return present, hits
