"""The image side of a reference store: each reference's colored image and line art.

Needs store.json and the images only, no embedder and no index, so the colorize stage
(and anything else that only reads references) never builds a CLIP model to do it.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from chromaflow.models.colorizers.base import Reference
from chromaflow.storage.images import decode_png

from chromaflow.models.patches import crop
from .store_format import StoreError, image_path, read_store_info


class ReferenceImages:
    def __init__(self, root: Path, info: dict):
        self.root = root
        self.info = info
        self._identity = {name: identity for name, identity, _ in info["references"]}
        self._sha256 = {name: sha for name, _, sha in info["references"]}

    @classmethod
    def open(cls, root: str | Path) -> "ReferenceImages":
        root = Path(root)
        return cls(root, read_store_info(root))

    @property
    def fingerprint(self) -> str:
        return self.info["fingerprint"]

    @property
    def config_hash(self) -> str:
        """Hash of the settings the stored images and vectors were made with."""
        return self.info["config_hash"]

    @property
    def references(self) -> list[str]:
        return sorted(self._identity)

    @property
    def identities(self) -> list[str]:
        """Identity pools in the store; "" is the unnamed pool."""
        return sorted(set(self._identity.values()))

    def identity_of(self, name: str) -> str:
        """The pool a reference belongs to ("" = unnamed)."""
        return self._identity[name]

    def reference_sha256(self, name: str) -> str:
        """sha256 of the reference's source file."""
        return self._sha256[name]

    def _check(self, name: str) -> None:
        if name not in self._identity:
            raise StoreError(f"{self.root}: no reference named {name!r}")

    def load_reference(self, name: str, score: float = 0.0) -> Reference:
        self._check(name)
        color = decode_png(image_path(self.root, name, "color").read_bytes())
        lines = decode_png(image_path(self.root, name, "lines").read_bytes(), gray=True)
        return Reference(identity=self._identity[name], name=name, color=color, lines=lines, score=score)

    def load_patch(self, name: str, box) -> np.ndarray:
        """RGB crop of a stored reference (box from a search result), for the canvas."""
        self._check(name)
        color = decode_png(image_path(self.root, name, "color").read_bytes())
        return np.ascontiguousarray(crop(color, tuple(int(v) for v in box)))
