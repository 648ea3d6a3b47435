"""Identity (ID) pools: which characters a page shows, and the colors they keep.

`refs/<identity>/*` are ID pools, `refs/*` the unnamed pool (""). With
`retrieval.identities: auto`, a page's identities come from retrieval votes: the
`identity_votes` best references vote for their identity with softmax weights
exp((score - best) / identity_temperature); an identity whose vote share reaches
`min_identity_confidence` is assigned. No confident identity gives ["unknown"] (the page
is then searched over all pools). Episodes vote per scene: `assign_scene_identities`
averages the votes of a scene's frames so all its frames share the assignment.

The colors an identity keeps from page to page live in models/palette_memory.py.
"""

from __future__ import annotations

import math

UNKNOWN = "unknown"
UNNAMED = ""


def identity_votes(reference_scores: dict[str, float], reference_identity: dict[str, str],
                   num_votes: int = 10, temperature: float = 0.02) -> dict[str, float]:
    """Vote share per identity ("" = unnamed pool) from page-level reference scores; sums to 1."""
    if not reference_scores:
        return {}
    ranked = sorted(reference_scores.items(), key=lambda kv: (-kv[1], kv[0]))[:num_votes]
    best = ranked[0][1]
    shares: dict[str, float] = {}
    for name, score in ranked:
        weight = math.exp((score - best) / temperature)
        identity = reference_identity[name]
        shares[identity] = shares.get(identity, 0.0) + weight
    total = sum(shares.values())
    return {k: v / total for k, v in sorted(shares.items(), key=lambda kv: -kv[1])}


def assign_identities(votes: dict[str, float], min_confidence: float = 0.7) -> list[str]:
    """Named identities whose vote share reaches min_confidence, most voted first;
    ["unknown"] when none does. The unnamed pool is never an identity."""
    chosen = [name for name, share in sorted(votes.items(), key=lambda kv: -kv[1])
              if name != UNNAMED and share >= min_confidence]
    return chosen or [UNKNOWN]


def assign_scene_identities(page_votes: list[dict[str, float]], min_confidence: float = 0.7) -> list[str]:
    """One assignment for all frames of a scene: the mean of their vote shares."""
    if not page_votes:
        return [UNKNOWN]
    total: dict[str, float] = {}
    for votes in page_votes:
        for name, share in votes.items():
            total[name] = total.get(name, 0.0) + share / len(page_votes)
    return assign_identities(total, min_confidence)


def _page_range(text: str) -> tuple[int, int]:
    start, _, end = str(text).partition("-")
    try:
        first, last = int(start), int(end or start)
    except ValueError:
        raise ValueError(f"retrieval.page_identities: page range {text!r} is not 'N' or 'N-M'") from None
    if first < 1 or last < first:
        raise ValueError(f"retrieval.page_identities: page range {text!r} must be 1-based and ascending")
    return first, last


def identities_for_page(retrieval_cfg, page_number: int) -> list[str] | None:
    """The configured identities of a page (1-based page number): a `page_identities` range
    that contains it, else the job-wide `identities` list; None means `auto`."""
    for text, names in retrieval_cfg.page_identities.items():
        first, last = _page_range(text)
        if first <= page_number <= last:
            return list(names)
    if retrieval_cfg.identities == "auto":
        return None
    return list(retrieval_cfg.identities)
