"""Patch embedders, selected with `retrieval.backend`.

An embedder turns a list of patches into an (n, dim) float32 array of unit vectors:

    name: str        short name, e.g. "edge-hist" or "clip"
    version: str     bumped when the vectors change for the same settings
    dim: int
    domain: str      "lines": patches are line art (uint8 H x W, 0 = ink); references are
                     turned into line art first. "rgb": patches are RGB uint8 (ColorFlow:
                     color reference patches vs the black-and-white page).
    signature: str   name + version + settings/weights hash; stored with the index, and
                     an index refuses to be queried by an embedder with another signature.
    embed(patches: list[np.ndarray]) -> np.ndarray

The `clip` module (torch, open_clip, transformers) is imported only when chosen.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

import numpy as np

if TYPE_CHECKING:
    from chromaflow.conf import Config


class Embedder(Protocol):
    name: str
    version: str
    dim: int
    domain: str

    @property
    def signature(self) -> str: ...

    def embed(self, patches: list[np.ndarray]) -> np.ndarray: ...


def build_embedder(config: "Config") -> Embedder:
    cfg = config.retrieval
    if cfg.backend == "descriptor":
        from .descriptor import EdgeHistogramEmbedder

        return EdgeHistogramEmbedder(work_size=cfg.work_size)
    if cfg.backend == "clip":
        from .clip import ClipEmbedder

        return ClipEmbedder.from_config(cfg)
    raise ValueError(f"unknown retrieval backend {cfg.backend!r}; available: descriptor, clip")
