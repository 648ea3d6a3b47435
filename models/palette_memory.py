"""Palette memory: the flat colors each identity (character) wears, kept for the whole job.

Why: an identity's references come from different sources (model sheets, colored pages,
scans), so "the same red jacket" arrives as several nearby RGB values. The region colorizer
fills with the exact colors of the references retrieved for a page, so without a memory the
jacket would take a slightly different red on every page, depending on which references
retrieval found. The memory clusters every identity's colors once per job; the colorizer
reads every reference color near a cluster as the cluster's canonical color before voting,
so a character keeps one red from first page to last.

Deterministic with shards colorized in parallel: the memory is built once, before the
colorize stage, from the reference pool alone (sorted order; nothing depends on which page
was colorized first); the palette_memory stage (stages/palette_memory.py) writes it to
`<job>/palette_memory.json`, and its sha256 is part of every colorize shard's input key.

Across chapters: `colorize.palette_memory_seed` names the palette_memory.json of an earlier
job. Its colors are loaded first and fixed (they never move), so a reference that arrives
later in a slightly different shade is snapped to the color the series already uses.

An entry's canonical color is one of its members (the heaviest: most pixels over the pool),
not a mean, so fills stay exact reference colors. Distances are CIELAB on OpenCV's 8-bit
scale; `tolerance` is the distance within which two colors count as the same color.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

import cv2
import numpy as np

from chromaflow.models.segmentation import ANALYSIS_SIZE, PAPER_LAB, flat_colors, ink_mask, rgb_to_lab
from chromaflow.storage.atomic import write_json
from chromaflow.storage.images import resize_longest

FORMAT = 1

RGB = tuple[int, int, int]


class PaletteMemoryError(ValueError):
    """A palette memory file that cannot be used; str() is one line naming the file."""


@dataclass
class PaletteEntry:
    rgb: RGB  # canonical color: the heaviest member
    weight: float = 0.0  # total pixel share over the pool
    members: dict[RGB, float] = field(default_factory=dict)
    fixed: bool = False  # seeded from an earlier job: the canonical color never changes


class PaletteMemory:
    def __init__(self) -> None:
        self._entries: dict[str, list[PaletteEntry]] = {}

    # ------------------------------------------------------------------ building
    def observe(self, identity: str, rgb: Iterable[int], weight: float, tolerance: float) -> RGB:
        """Fold one color of `identity` in: it joins the nearest entry within `tolerance`
        (or starts a new one). Returns the entry's canonical color."""
        rgb = tuple(int(v) for v in rgb)
        if weight <= 0:
            raise ValueError(f"palette memory: weight must be > 0 (got {weight})")
        entry = self.nearest(identity, rgb, tolerance)
        if entry is None:
            entry = PaletteEntry(rgb)
            self._entries.setdefault(identity, []).append(entry)
        entry.weight += weight
        entry.members[rgb] = entry.members.get(rgb, 0.0) + weight
        if not entry.fixed:
            entry.rgb = max(entry.members, key=lambda c: (entry.members[c], c))
        return entry.rgb

    def fix(self) -> "PaletteMemory":
        """Freeze every canonical color (a seed from an earlier chapter)."""
        for entries in self._entries.values():
            for entry in entries:
                entry.fixed = True
        return self

    # ------------------------------------------------------------------ queries
    def nearest(self, identity: str, rgb: Iterable[int], tolerance: float) -> PaletteEntry | None:
        entries = self._entries.get(identity, [])
        if not entries:
            return None
        lab = rgb_to_lab(np.array([tuple(rgb)]))[0]
        d = np.linalg.norm(rgb_to_lab(np.array([e.rgb for e in entries])) - lab, axis=1)  # one conversion
        best = int(d.argmin())
        return entries[best] if d[best] <= tolerance else None

    def colors(self, identities: Iterable[str]) -> np.ndarray:
        """Canonical colors (uint8 RGB, N x 3) of these identities, heaviest first."""
        entries = [e for name in sorted(set(identities)) for e in self._entries.get(name, [])]
        entries.sort(key=lambda e: (-e.weight, e.rgb))
        return np.array([e.rgb for e in entries], dtype=np.uint8).reshape(-1, 3)

    def entries(self, identity: str) -> list[PaletteEntry]:
        return list(self._entries.get(identity, []))

    @property
    def identities(self) -> list[str]:
        return sorted(self._entries)

    # ------------------------------------------------------------------ persistence
    def to_dict(self) -> dict:
        return {"format": FORMAT, "identities": {
            name: [{"rgb": list(e.rgb), "weight": round(e.weight, 6), "fixed": e.fixed,
                    "members": [[*c, round(w, 6)] for c, w in sorted(e.members.items())]} for e in entries]
            for name, entries in sorted(self._entries.items())}}

    @classmethod
    def from_dict(cls, data: dict, origin: str = "palette memory") -> "PaletteMemory":
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            raise ValueError(f"{origin}: not a chromaflow palette memory (format {FORMAT})")
        memory = cls()
        for name, entries in (data.get("identities") or {}).items():
            for e in entries:
                members = {tuple(int(v) for v in m[:3]): float(m[3]) for m in e.get("members", [])}
                rgb = tuple(int(v) for v in e["rgb"])
                if len(rgb) != 3 or not all(0 <= v <= 255 for v in rgb):
                    raise ValueError(f"{origin}: identity {name!r} has a color that is not 8-bit RGB: {e['rgb']}")
                memory._entries.setdefault(name, []).append(
                    PaletteEntry(rgb, float(e.get("weight", 0.0)), members or {rgb: 1.0}, bool(e.get("fixed", False))))
        return memory

    def save(self, path: str | Path, **extra) -> None:
        write_json(path, {**self.to_dict(), **extra})

    @classmethod
    def load(cls, path: str | Path) -> "PaletteMemory":
        """PaletteMemoryError (a ValueError) naming the file when it is missing or broken."""
        path = Path(path)
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            return cls.from_dict(data, str(path))
        except FileNotFoundError:
            raise PaletteMemoryError(f"{path}: palette memory file not found") from None
        except (ValueError, KeyError, TypeError, IndexError) as exc:
            message = str(exc) if str(exc).startswith(str(path)) else f"{path}: unreadable palette memory ({exc})"
            raise PaletteMemoryError(message) from None


# ---------------------------------------------------------------------- building from a pool
def reference_colors(color: np.ndarray, lines: np.ndarray, tolerance: float) -> dict[RGB, float]:
    """The flat colors of one colored reference (share of its non-ink pixels), paper white
    excluded, read at ANALYSIS_SIZE like the region colorizer reads them (nearest-neighbor
    scaling keeps flat colors exact, so memory colors are the values the colorizer votes with)."""
    small = resize_longest(color, ANALYSIS_SIZE, cv2.INTER_NEAREST)
    paper = (~ink_mask(resize_longest(lines, ANALYSIS_SIZE, cv2.INTER_NEAREST)) if lines.shape == color.shape[:2]
             else np.ones(small.shape[:2], bool))
    found = flat_colors(small, paper)
    if not found:
        return {}
    rgbs = list(found)
    far = np.linalg.norm(rgb_to_lab(np.array(rgbs)) - PAPER_LAB, axis=1) > tolerance
    return {c: found[c] for c, keep in zip(rgbs, far) if keep}


def build_palette_memory(store, tolerance: float, seed: PaletteMemory | None = None,
                         cache: dict | None = None) -> tuple[PaletteMemory, dict]:
    """The memory of a reference store (retrieval.images.ReferenceImages or anything with its
    references/identity_of/reference_sha256/config_hash/load_reference): the seed's colors (fixed) first, then every
    pool's colors (`remember_pools`). `cache` maps reference name -> {"key", "colors"} from
    an earlier build (unchanged references are not decoded again). Returns the memory and
    the updated cache."""
    cache = dict(cache or {})
    fresh: dict = {}
    pools: dict[str, list[dict[RGB, float]]] = {}
    for name in store.references:
        key = f"{store.reference_sha256(name)}:{store.config_hash}:{tolerance}"
        hit = cache.get(name)
        if hit and hit.get("key") == key:
            colors = {tuple(c[:3]): float(c[3]) for c in hit["colors"]}
        else:
            ref = store.load_reference(name)
            # Rounded as stored, so a cached build gives the very same memory.
            colors = {c: round(s, 6) for c, s in reference_colors(ref.color, ref.lines, tolerance).items()}
        fresh[name] = {"key": key, "colors": [[*c, s] for c, s in sorted(colors.items())]}
        pools.setdefault(store.identity_of(name), []).append(colors)
    return remember_pools(pools, tolerance, seed), fresh


def remember_pools(pools: dict[str, list[dict[RGB, float]]], tolerance: float,
                   seed: PaletteMemory | None = None) -> PaletteMemory:
    """Memory of identity -> [reference_colors of each reference]. A pool's colors are summed
    over its references and folded in heaviest first, so clusters are founded by the pool's
    main fills (not by a stray tint) and the result does not depend on reference order."""
    memory = PaletteMemory.from_dict(seed.to_dict()).fix() if seed is not None else PaletteMemory()
    for identity in sorted(pools):
        total: dict[RGB, float] = {}
        for colors in pools[identity]:
            for rgb, share in colors.items():
                total[rgb] = total.get(rgb, 0.0) + share
        for rgb, weight in sorted(total.items(), key=lambda kv: (-kv[1], kv[0])):
            memory.observe(identity, rgb, weight, tolerance)
    return memory


def memory_of_references(refs, tolerance: float) -> PaletteMemory:
    """The memory of an in-memory pool (models.colorizers.Reference list): what the pipeline
    would build from a store holding exactly these references."""
    pools: dict[str, list[dict[RGB, float]]] = {}
    for ref in refs:
        pools.setdefault(ref.identity, []).append(reference_colors(ref.color, ref.lines, tolerance))
    return remember_pools(pools, tolerance)


def write_palette_memory(store, path: str | Path, tolerance: float, seed_path: str | None) -> Path:
    """Build (or refresh) a memory file from a store; the file also carries the
    per-reference color cache for the next build (a broken file is rebuilt)."""
    path = Path(path)
    cache = {}
    if path.exists():
        try:
            cache = json.loads(path.read_text(encoding="utf-8")).get("reference_colors", {})
        except ValueError:
            cache = {}
    seed = PaletteMemory.load(seed_path) if seed_path else None
    memory, cache = build_palette_memory(store, tolerance, seed, cache)
    memory.save(path, tolerance=tolerance, seed=str(seed_path) if seed_path else None, reference_colors=cache)
    return path
