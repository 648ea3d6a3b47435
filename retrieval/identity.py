"""Identity (ID) pools: which characters a page shows, and the colors they keep.

`refs/<identity>/*` are ID pools, `refs/*` the unnamed pool (""). With
`retrieval.identities: auto`, a page's identities come from retrieval votes: the
`identity_votes` best references vote for their identity with softmax weights
exp((score - best) / identity_temperature); an identity whose vote share reaches
`min_identity_confidence` is assigned. No confident identity gives ["unknown"] (the page
is then searched over all pools). Episodes vote per scene: `assign_scene_identities`
averages the votes of a scene's frames so all its frames share the assignment.

`PaletteMemory` keeps, per identity, the colors chosen for its regions across the job, so
later pages reuse them (see docs/retrieval.md for how a colorizer uses it).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np

from chromaflow.storage.atomic import write_json

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


def assign_identities(votes: dict[str, float], min_confidence: float = 0.5) -> list[str]:
    """Named identities whose vote share reaches min_confidence, most voted first;
    ["unknown"] when none does. The unnamed pool is never an identity."""
    chosen = [name for name, share in sorted(votes.items(), key=lambda kv: -kv[1])
              if name != UNNAMED and share >= min_confidence]
    return chosen or [UNKNOWN]


def assign_scene_identities(page_votes: list[dict[str, float]], min_confidence: float = 0.5) -> list[str]:
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


class PaletteMemory:
    """Per-identity colors (CIELAB) of named regions, remembered across a job.

    `region_key` is an opaque string the colorizer chooses for "the same part of the same
    character" (e.g. the reference region it matched: "alice/front.png#12", or a semantic
    label such as "hair"). `remember` keeps a weighted running mean per key, so a color seen
    on many pages with high retrieval scores dominates; `lookup` returns it (or None).
    """

    VERSION = 1

    def __init__(self) -> None:
        self._entries: dict[str, dict[str, dict]] = {}

    def remember(self, identity: str, region_key: str, lab_color, weight: float = 1.0) -> np.ndarray:
        """Fold one observation into the memory; returns the updated mean Lab color."""
        lab = np.asarray(lab_color, dtype=np.float64).reshape(3)
        if weight <= 0 or not np.all(np.isfinite(lab)):
            raise ValueError(f"palette memory: weight must be > 0 and color finite (got {weight}, {lab.tolist()})")
        slot = self._entries.setdefault(identity, {}).get(region_key)
        if slot is None:
            slot = {"lab": lab.tolist(), "weight": float(weight), "count": 1}
        else:
            total = slot["weight"] + weight
            mean = (np.asarray(slot["lab"]) * slot["weight"] + lab * weight) / total
            slot = {"lab": mean.tolist(), "weight": float(total), "count": slot["count"] + 1}
        self._entries[identity][region_key] = slot
        return np.asarray(slot["lab"])

    def lookup(self, identity: str, region_key: str) -> np.ndarray | None:
        """Remembered mean Lab color (float, 3), or None."""
        slot = self._entries.get(identity, {}).get(region_key)
        return None if slot is None else np.asarray(slot["lab"], dtype=np.float64)

    def weight(self, identity: str, region_key: str) -> float:
        slot = self._entries.get(identity, {}).get(region_key)
        return 0.0 if slot is None else float(slot["weight"])

    def regions(self, identity: str) -> dict[str, np.ndarray]:
        """All remembered regions of an identity: key -> mean Lab."""
        return {k: np.asarray(v["lab"]) for k, v in self._entries.get(identity, {}).items()}

    @property
    def identities(self) -> list[str]:
        return sorted(self._entries)

    def to_dict(self) -> dict:
        return {"version": self.VERSION, "identities": self._entries}

    @classmethod
    def from_dict(cls, data: dict, origin: str = "palette memory") -> "PaletteMemory":
        if not isinstance(data, dict) or data.get("version") != cls.VERSION:
            raise ValueError(f"{origin}: not a palette memory (version {cls.VERSION})")
        memory = cls()
        for identity, regions in (data.get("identities") or {}).items():
            for key, slot in regions.items():
                lab = [float(v) for v in slot["lab"]]
                memory._entries.setdefault(identity, {})[key] = {
                    "lab": lab, "weight": float(slot["weight"]), "count": int(slot.get("count", 1))}
        return memory

    def save(self, path: str | Path) -> None:
        write_json(path, self.to_dict())

    @classmethod
    def load(cls, path: str | Path) -> "PaletteMemory":
        """Empty memory when the file does not exist yet; ValueError naming the file when it is broken."""
        path = Path(path)
        if not path.exists():
            return cls()
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            return cls.from_dict(data, str(path))
        except (ValueError, KeyError, TypeError) as exc:
            message = str(exc) if str(exc).startswith(str(path)) else f"{path}: unreadable palette memory ({exc})"
            raise ValueError(message) from None
