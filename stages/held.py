"""Held drawings in the shard stages: an episode frame that repeats the drawing before it
in place (ingest's `hold_of`, no pan offset; models/holds.py) takes that drawing's output
in lines, instances, colorize and upscale instead of being computed again. A repeat always
points at the last distinct drawing (never at another repeat), so one output is kept."""

from __future__ import annotations

import json

from chromaflow.storage.shards import Sample


def in_place_source(meta: dict) -> str | None:
    """The key of the drawing this frame repeats in place, or None (a new drawing, a pan)."""
    if "hold_of" not in meta or any(meta["hold_offset"]):  # ingest writes both or neither
        return None
    return meta["hold_of"]


class HeldOutputs:
    """The last distinct drawing's output sample of one stage, for its in-place repeats."""

    def __init__(self):
        self._key: str | None = None
        self._output: Sample | None = None

    def repeat_of(self, inputs: dict[str, Sample]) -> Sample | None:
        """The output to reuse for this item (its ingest meta says it repeats the drawing
        kept here in place), else None."""
        source = in_place_source(json.loads(inputs["ingest"]["json"]))
        return self._output if source is not None and source == self._key else None

    def remember(self, key: str, inputs: dict[str, Sample], output: Sample) -> None:
        """Keep `output` when this item is a distinct drawing (not a repeat of any kind)."""
        if "hold_of" not in json.loads(inputs["ingest"]["json"]):
            self._key, self._output = key, output
