"""Training shards: the format `build-training-set` writes and the trainers read.

    DATA/
      dataset.json                    written last: splits, shards, pages, skipped inputs, settings
      train/shard-000000.tar          WebDataset tar, one sample per page/frame
      train/shard-000000.stats.json   that shard's stats, written after the tar (its done marker)
      validation/...                  the held-back chapters, same layout
      pool/<split>/<chapter>/<key>.png   the pages at training size: the retrieval pool
      index/<split>/                  the reference store over that pool (retrieval/store.py)

Sample members (`__key__` = c<chapter>p<page>, e.g. c0002p00017):

    color.png   RGB target page          gray.png    its luminance
    lines.png   line art (models/lines)  screen.png  screenstyle variant (gray/screentone mix)
    ref00.png … reference patches, quadrant-major (TL top-1..K, TR …, BL …, BR …)
    shuf00.png … (optional) the same patches patch-shuffled, MangaNinja style
    inst00.png … (optional, train.instance_crops) each character instance of the colored page,
                white outside its mask, Follow-Your-Color style (training/instance_crops.py)
    json        key, chapter, source name, page index, screen weight/period, per reference
                its provenance (page, box, score) so training can re-sample them, and with
                instance crops "instances": [{box, score, group, area}, ...]

The trainers read samples by index (`ShardReader`): each tar is indexed once (member
offsets), so a worker can jump to any sample, which makes resuming at step N exact.
"""

from __future__ import annotations

import json
import tarfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from chromaflow.storage.images import decode_png, encode_png

DATASET_JSON = "dataset.json"
DATASET_FORMAT = 1
SPLITS = ("train", "validation")
QUADRANTS = 4


class DatasetError(ValueError):
    """A training-set folder is missing or unreadable (one line naming the path)."""


@dataclass
class TrainPage:
    key: str
    color: np.ndarray  # RGB uint8 H x W x 3
    gray: np.ndarray  # uint8 H x W
    lines: np.ndarray  # uint8 H x W, 0 = ink
    screen: np.ndarray  # uint8 H x W, screenstyle variant of gray
    patches: list[list[np.ndarray]]  # 4 quadrants x K reference patches (RGB), best first
    meta: dict[str, Any] = field(default_factory=dict)
    shuffled: list[list[np.ndarray]] | None = None  # same layout, patch-shuffled
    instance_crops: list[np.ndarray] = field(default_factory=list)  # meta["instances"][i]'s crop (RGB)


def shard_name(index: int) -> str:
    return f"shard-{index:06d}"


def encode_page(page: TrainPage) -> dict[str, bytes]:
    """WebDataset members of one page (see the module docstring)."""
    sample: dict[str, Any] = {"__key__": page.key, "color.png": encode_png(page.color),
                              "gray.png": encode_png(page.gray), "lines.png": encode_png(page.lines),
                              "screen.png": encode_png(page.screen)}
    per_quadrant = len(page.patches[0]) if page.patches else 0
    if any(len(q) != per_quadrant for q in page.patches):
        raise ValueError(f"{page.key}: every quadrant needs the same number of reference patches")
    for q, patches in enumerate(page.patches):
        for r, patch in enumerate(patches):
            sample[f"ref{q * per_quadrant + r:02d}.png"] = encode_png(patch)
    if page.shuffled is not None:
        for q, patches in enumerate(page.shuffled):
            for r, patch in enumerate(patches):
                sample[f"shuf{q * per_quadrant + r:02d}.png"] = encode_png(patch)
    for i, crop in enumerate(page.instance_crops):
        sample[f"inst{i:02d}.png"] = encode_png(crop)
    meta = dict(page.meta, key=page.key, refs_per_quadrant=per_quadrant)
    sample["json"] = json.dumps(meta, sort_keys=True).encode()
    return sample


def decode_page(sample: dict[str, bytes]) -> TrainPage:
    meta = json.loads(sample["json"])
    k = int(meta["refs_per_quadrant"])

    def grid(prefix: str) -> list[list[np.ndarray]] | None:
        if k and f"{prefix}00.png" not in sample:
            return None
        return [[decode_png(sample[f"{prefix}{q * k + r:02d}.png"]) for r in range(k)] for q in range(QUADRANTS)]

    return TrainPage(key=meta["key"], color=decode_png(sample["color.png"]),
                     gray=decode_png(sample["gray.png"], gray=True), lines=decode_png(sample["lines.png"], gray=True),
                     screen=decode_png(sample["screen.png"], gray=True), patches=grid("ref") or [[]] * QUADRANTS,
                     meta=meta, shuffled=grid("shuf"),
                     instance_crops=[decode_png(sample[f"inst{i:02d}.png"]) for i in range(len(meta.get("instances", [])))])


# -- reading a built set -------------------------------------------------------------------

@dataclass
class TrainingSet:
    root: Path
    info: dict[str, Any]

    def shards(self, split: str) -> list[Path]:
        return [self.root / split / f"{name}.tar" for name in self.info["splits"].get(split, {}).get("shards", [])]

    def pages(self, split: str) -> int:
        return int(self.info["splits"].get(split, {}).get("pages", 0))


def open_training_set(root: str | Path) -> TrainingSet:
    root = Path(root)
    path = root / DATASET_JSON
    if not path.is_file():
        raise DatasetError(f"{root}: not a training set (no {DATASET_JSON}); build one with `chromaflow build-training-set`")
    try:
        info = json.loads(path.read_text(encoding="utf-8"))
    except ValueError as exc:
        raise DatasetError(f"{path}: unreadable ({exc})") from None
    if info.get("format") != DATASET_FORMAT:
        raise DatasetError(f"{path}: format {info.get('format')} is not {DATASET_FORMAT}; rebuild the training set")
    return TrainingSet(root, info)


class ShardReader:
    """Random access to the samples of some shards: tar member offsets are indexed once."""

    def __init__(self, paths: list[Path]):
        self.paths = [Path(p) for p in paths]
        self.entries: list[tuple[int, dict[str, tuple[int, int]]]] = []  # (path index, ext -> (offset, size))
        for pi, path in enumerate(self.paths):
            by_key: dict[str, dict[str, tuple[int, int]]] = {}
            try:
                with tarfile.open(path) as tar:
                    for member in tar:
                        if member.isfile():
                            key, _, ext = member.name.partition(".")
                            by_key.setdefault(key, {})[ext] = (member.offset_data, member.size)
            except (OSError, tarfile.TarError) as exc:
                raise DatasetError(f"{path}: unreadable training shard ({exc})") from None
            self.entries += [(pi, members) for members in by_key.values()]
        self._files: dict[int, Any] = {}

    def __len__(self) -> int:
        return len(self.entries)

    def raw(self, index: int) -> dict[str, bytes]:
        pi, members = self.entries[index]
        handle = self._files.get(pi)
        if handle is None:  # opened lazily: DataLoader processes each open their own
            handle = self._files[pi] = open(self.paths[pi], "rb")
        sample = {}
        for ext, (offset, size) in members.items():
            handle.seek(offset)
            sample[ext] = handle.read(size)
        sample["__key__"] = json.loads(sample["json"])["key"]
        return sample

    def page(self, index: int) -> TrainPage:
        return decode_page(self.raw(index))

    def __getstate__(self):  # picklable for DataLoader workers: no open files
        return {**self.__dict__, "_files": {}}
