"""Which identity each instance of a page (or each track of a scene) is: one joint decision.

Every instance has identity scores (its vote shares from retrieving its crop against the
ID pools, retrieval/identity.py). Deciding each instance alone would give two
look-alike instances the same identity whenever one pool wins both votes; deciding them
jointly uses what the page says as a whole:

1. An (instance, identity) pair is allowed when the share reaches `min_confidence`.
2. A one-to-one assignment over allowed pairs maximizing the total share (Hungarian,
   `scipy.optimize.linear_sum_assignment`): an instance torn between two identities takes
   the one no other instance claims more strongly.
3. An instance the one-to-one step leaves out because its allowed identities are all
   taken still takes its best allowed one: two instances share an identity only when
   both of their scores say so (twins, one character twice on a page).
4. An instance with no allowed pair is "unknown".

The unnamed pool ("") is never an identity. With configured identities for the page
(`retrieval.identities` / `page_identities`) only those are candidates, their shares are
renormalized among them and every instance takes one of them.
"""

from __future__ import annotations

import numpy as np
from scipy.optimize import linear_sum_assignment

UNKNOWN = "unknown"
UNNAMED = ""


def assign_instance_identities(scores: list[dict[str, float]], min_confidence: float,
                               configured: list[str] | None = None) -> list[str]:
    """One identity (or "unknown") per instance, from each instance's {identity: share}."""
    if not scores:
        return []
    if configured is not None:
        names = sorted(set(configured) - {UNNAMED, UNKNOWN})
        if not names:
            return [UNKNOWN] * len(scores)
        scores = [_renormalized(s, names) for s in scores]
        min_confidence = 0.0
    else:
        names = sorted({name for s in scores for name in s} - {UNNAMED, UNKNOWN})
    if not names:
        return [UNKNOWN] * len(scores)
    share = np.array([[s.get(name, 0.0) for name in names] for s in scores], np.float64)
    allowed = share >= min_confidence
    if configured is not None:
        allowed[:] = True
    assigned: list[str | None] = [None] * len(scores)
    rows, cols = linear_sum_assignment(np.where(allowed, -share, 1.0))
    for r, c in zip(rows, cols):
        if allowed[r, c]:
            assigned[r] = names[c]
    for r in range(len(scores)):
        if assigned[r] is None and allowed[r].any():
            assigned[r] = names[int(np.argmax(np.where(allowed[r], share[r], -1.0)))]
    return [a if a is not None else UNKNOWN for a in assigned]


def _renormalized(shares: dict[str, float], names: list[str]) -> dict[str, float]:
    total = sum(shares.get(n, 0.0) for n in names)
    if total <= 0:
        return {n: 1.0 / len(names) for n in names}
    return {n: shares.get(n, 0.0) / total for n in names}


def track_scores(frame_scores: list[dict[str, float]], min_confidence: float) -> dict[str, float]:
    """A track's identity scores from all its frames: each frame votes for its best
    identity when that share reaches `min_confidence`; the score of an identity is its
    share of those confident votes (a majority of confident votes reaches 0.5)."""
    votes: dict[str, int] = {}
    for scores in frame_scores:
        named = {k: v for k, v in scores.items() if k not in (UNNAMED, UNKNOWN)}
        if not named:
            continue
        best = max(sorted(named), key=lambda k: named[k])
        if named[best] >= min_confidence:
            votes[best] = votes.get(best, 0) + 1
    total = sum(votes.values())
    return {k: v / total for k, v in votes.items()} if total else {}
