"""A small cache of results keyed by the content of the arrays they were computed from:
a reference pool reaching the colorizer again (a chapter's pages draw on one ID pool) is
not prepared twice. The oldest entry goes first."""

from __future__ import annotations

import hashlib
from typing import Any, Callable

import numpy as np


class ContentCache:
    def __init__(self, size: int):
        self.size = size
        self._entries: dict[bytes, Any] = {}

    def get(self, parts: list, make: Callable[[], Any]) -> Any:
        """The result for `parts` (arrays, numbers or None), computed by `make` when new."""
        digest = hashlib.blake2b(digest_size=16)
        for part in parts:
            part = np.zeros(0) if part is None else np.ascontiguousarray(part)
            digest.update(f"{part.dtype}{part.shape}".encode())
            digest.update(part.data)
        key = digest.digest()
        if key not in self._entries:
            result = make()
            while len(self._entries) >= self.size:
                self._entries.pop(next(iter(self._entries)))
            self._entries[key] = result
        return self._entries[key]
