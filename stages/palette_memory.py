"""palette_memory: each identity's colors, clustered once per job before any page is
colorized (so shards colorized in parallel agree) and written to OUT/palette_memory.json
(models/palette_memory.py). Its sha256 is part of every colorize shard's key."""

from __future__ import annotations

from chromaflow.conf import Config
from chromaflow.models.palette_memory import PaletteMemory, write_palette_memory
from chromaflow.retrieval.images import ReferenceImages
from chromaflow.storage.job import JobDir


def run(job: JobDir, config: Config) -> str | None:
    """Build (or refresh) the job's palette_memory.json; returns its path, or None when the
    memory is off."""
    cfg = config.colorize
    if not cfg.palette_memory:
        return None
    return str(write_palette_memory(ReferenceImages.open(job.references), job.palette_memory, cfg.palette_tolerance,
                                    cfg.palette_memory_seed))


def job_palette_memory(job: JobDir, config: Config) -> PaletteMemory | None:
    """The job's memory for the colorize stage: None when disabled or not built."""
    if not config.colorize.palette_memory or not job.palette_memory.exists():
        return None
    return PaletteMemory.load(job.palette_memory)
