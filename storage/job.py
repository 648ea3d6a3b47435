"""The job directory: where every stage of one chapter/episode run lives.

    OUT/
      job.json                         source, refs, kind, resolved config, shard count
      ingest/{job}-{shard:06d}.tar     WebDataset shards, one set per shard stage
      ingest/{job}-{shard:06d}.stats.json   written last: the shard is done
      ingest/{job}-{shard:06d}.failed.json  the shard failed (error, attempts)
      lines/ retrieve/ colorize/ upscale/   same layout per stage (stages/registry.py)
      references/                      the reference store and index of this job
      palette_memory.json              each identity's remembered colors
      manifest.parquet                 one row per (shard, stage), rebuilt from stats files
      pages/ chapter.cbz | episode.mp4 report.html

docs/storage.md documents the format.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .atomic import write_json

def safe_job_name(text: str) -> str:
    """Dot-free, filesystem-safe job name (WebDataset splits keys at the first dot)."""
    name = re.sub(r"[^A-Za-z0-9_-]+", "-", text).strip("-_")
    return name[:64] or "job"


@dataclass(frozen=True)
class JobDir:
    root: Path
    name: str

    @classmethod
    def open(cls, root: str | Path) -> "JobDir":
        root = Path(root)
        info = json.loads((root / "job.json").read_text())
        return cls(root, info["name"])

    @property
    def job_json(self) -> Path:
        return self.root / "job.json"

    @property
    def manifest(self) -> Path:
        return self.root / "manifest.parquet"

    @property
    def references(self) -> Path:
        return self.root / "references"

    @property
    def palette_memory(self) -> Path:
        """Each identity's remembered colors (models/palette_memory.py), built before colorizing."""
        return self.root / "palette_memory.json"

    @property
    def pages(self) -> Path:
        return self.root / "pages"

    def stage_dir(self, stage: str) -> Path:
        """The shard set of a stage (stages/registry.py names them)."""
        if not re.fullmatch(r"[a-z_]+", stage):
            raise ValueError(f"not a stage name: {stage!r}")
        return self.root / stage

    def _base(self, stage: str, shard: int) -> Path:
        return self.stage_dir(stage) / f"{self.name}-{shard:06d}"

    def shard_path(self, stage: str, shard: int) -> Path:
        return self._base(stage, shard).with_suffix(".tar")

    def stats_path(self, stage: str, shard: int) -> Path:
        return self._base(stage, shard).with_suffix(".stats.json")

    def failed_path(self, stage: str, shard: int) -> Path:
        return self._base(stage, shard).with_suffix(".failed.json")

    def read_info(self) -> dict[str, Any]:
        return json.loads(self.job_json.read_text())

    def write_info(self, info: dict[str, Any]) -> None:
        write_json(self.job_json, info)

    def num_shards(self) -> int:
        return int(self.read_info().get("num_shards") or 0)
