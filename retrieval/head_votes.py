"""Identity votes from a drawing's head: who a character is shows most in its face and
hair, while the whole-drawing search (retrieval/search.py) is led by its pose.

Two characters drawn alike (the same gestures, different hair) are told apart poorly by
the whole crop: a raised arm weighs more in the descriptor than the hair. The head crop
is the top of the drawing's ink box, a square-ish window HEAD_SHARE x its ink width tall
(the whole face of a face-only character, head and hair of a bust or a figure). It is
embedded with the store's own embedder and compared with the same crop of every
reference (computed once per store); an identity's similarity is its best reference's,
and the votes are a softmax over identities with `retrieval.identity_temperature`.

stages/retrieve.py (retrieval/instance_search.py) averages these votes with the
whole-crop votes. Measured on two independently seeded multi-character chapters
(docs/quality.md): top-1 identity of the instance crops 0.860 -> 1.000 and 0.795 -> 0.846.
"""

from __future__ import annotations

import numpy as np

HEAD_SHARE = 0.8  # head crop height, share of the drawing's ink width
HEAD_WEIGHT = 0.5  # share of the head votes in an instance's identity scores

_references: dict[tuple, tuple[list[str], np.ndarray]] = {}


def head_crop(image: np.ndarray, lines: np.ndarray) -> np.ndarray:
    """The top of the ink box of `lines` (0 = ink), cut from `image` (the lines or RGB)."""
    ys, xs = np.nonzero(lines < 128)
    if not len(xs):
        return image
    x0, x1, y0, y1 = xs.min(), xs.max() + 1, ys.min(), ys.max() + 1
    return image[y0:min(y1, y0 + max(1, int(HEAD_SHARE * (x1 - x0)))), x0:x1]


def reference_heads(store) -> tuple[list[str], np.ndarray]:
    """(identity of each reference, their head-crop vectors), once per store and embedder."""
    key = (str(store.root), store.fingerprint, store.embedder.signature)
    if key not in _references:
        identities, crops = [], []
        for name in store.references:
            ref = store.load_reference(name)
            source = ref.lines if store.embedder.domain == "lines" else ref.color
            crops.append(np.ascontiguousarray(head_crop(source, ref.lines)))
            identities.append(ref.identity)
        _references[key] = (identities, np.asarray(store.embedder.embed(crops), np.float32))
    return _references[key]


def head_votes(store, crop_lines: np.ndarray, crop_page: np.ndarray, temperature: float) -> dict[str, float]:
    """Vote share per identity ("" = unnamed pool) from the head crop; sums to 1."""
    identities, vectors = reference_heads(store)
    if not identities:
        return {}
    source = crop_lines if store.embedder.domain == "lines" else crop_page
    query = np.asarray(store.embedder.embed([np.ascontiguousarray(head_crop(source, crop_lines))]), np.float32)[0]
    best: dict[str, float] = {}
    for identity, similarity in zip(identities, vectors @ query):
        best[identity] = max(best.get(identity, -np.inf), float(similarity))
    top = max(best.values())
    weights = {k: float(np.exp((v - top) / temperature)) for k, v in best.items()}
    total = sum(weights.values())
    return {k: w / total for k, w in sorted(weights.items(), key=lambda kv: -kv[1])}


def combined_votes(whole: dict[str, float], head: dict[str, float], weight: float = HEAD_WEIGHT) -> dict[str, float]:
    """(1 - weight) x whole-crop votes + weight x head votes, highest first."""
    names = set(whole) | set(head)
    mixed = {k: (1 - weight) * whole.get(k, 0.0) + weight * head.get(k, 0.0) for k in names}
    return {k: round(v, 6) for k, v in sorted(mixed.items(), key=lambda kv: (-kv[1], kv[0]))}
