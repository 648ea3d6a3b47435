"""Reader for the evaluation dataset layout.

    DATASET/<identity>/<view>_line.png    black lines on white
    DATASET/<identity>/<view>_color.png   the colored drawing, same framing
    DATASET/manifest.json                 optional: {"identities": {NAME: {"kind": "pose"|"recolor"}}}

`pose` identities share one palette over different drawings; `recolor` identities share one
drawing under different palettes. Without a manifest every identity is `pose`. Reading
only lists files; images are decoded on demand with `load_view`, so one corrupt file is
reported and skipped by the caller instead of failing the whole dataset.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from chromaflow.storage.images import ImageError, decode_image
from chromaflow.storage.sources import IMAGE_SUFFIXES, natural_key

POSE, RECOLOR = "pose", "recolor"
KINDS = (POSE, RECOLOR)
LINE_SUFFIX, COLOR_SUFFIX = "_line", "_color"


class EvalDatasetError(ValueError):
    """The dataset folder as a whole is unusable; str() is one line naming the path."""


@dataclass(frozen=True)
class View:
    identity: str
    name: str  # the view's stem, e.g. "1f638"
    line_path: Path
    color_path: Path


@dataclass
class Identity:
    name: str
    kind: str  # POSE or RECOLOR
    views: list[View] = field(default_factory=list)


@dataclass
class EvalDataset:
    root: Path
    identities: list[Identity]
    problems: list[str] = field(default_factory=list)  # one line per skipped file


def _read_manifest_kinds(root: Path) -> dict[str, str]:
    path = root / "manifest.json"
    if not path.exists():
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise EvalDatasetError(f"{path}: not readable JSON ({exc})") from None
    kinds: dict[str, str] = {}
    for name, entry in (data.get("identities") or {}).items():
        kind = (entry or {}).get("kind", POSE)
        if kind not in KINDS:
            raise EvalDatasetError(f"{path}: identity {name!r} has kind {kind!r}, expected one of {KINDS}")
        kinds[name] = kind
    return kinds


def _image_stem(path: Path, suffix: str) -> str | None:
    if path.suffix.lower() not in IMAGE_SUFFIXES or not path.stem.endswith(suffix):
        return None
    return path.stem[: -len(suffix)]


def scan_eval_dataset(root: str | Path) -> EvalDataset:
    """List identities and their (line, color) view pairs, in natural order."""
    root = Path(root)
    if not root.is_dir():
        raise EvalDatasetError(f"{root}: evaluation dataset folder does not exist")
    kinds = _read_manifest_kinds(root)
    identities: list[Identity] = []
    problems: list[str] = []
    for folder in sorted((p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")),
                         key=lambda p: natural_key(p.name)):
        lines: dict[str, Path] = {}
        colors: dict[str, Path] = {}
        for file in folder.iterdir():
            if file.name.startswith("."):
                continue
            stem = _image_stem(file, LINE_SUFFIX)
            if stem is not None:
                lines[stem] = file
                continue
            stem = _image_stem(file, COLOR_SUFFIX)
            if stem is not None:
                colors[stem] = file
        for stem in sorted(set(lines) ^ set(colors), key=natural_key):
            present = lines.get(stem) or colors.get(stem)
            problems.append(f"{present}: no matching {'_color' if stem in lines else '_line'} image; view skipped")
        views = [View(folder.name, stem, lines[stem], colors[stem])
                 for stem in sorted(set(lines) & set(colors), key=natural_key)]
        if views:
            identities.append(Identity(folder.name, kinds.get(folder.name, POSE), views))
    if not identities:
        raise EvalDatasetError(f"{root}: no <identity>/<view>_line.png + <view>_color.png pairs found")
    return EvalDataset(root, identities, problems)


def load_image(path: Path) -> np.ndarray:
    """RGB uint8 of one dataset file; ImageError (one line naming the file) when unusable."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ImageError(f"{path}: cannot read ({exc.strerror or exc})") from None
    return decode_image(data, str(path))


def load_view(view: View) -> tuple[np.ndarray, np.ndarray]:
    """(line RGB, color RGB) of a view; raises ImageError naming the bad file, or when the
    two images differ in size."""
    line = load_image(view.line_path)
    color = load_image(view.color_path)
    if line.shape != color.shape:
        raise ImageError(f"{view.color_path}: size {color.shape[1]}x{color.shape[0]} differs from its line image "
                         f"{line.shape[1]}x{line.shape[0]}")
    return line, color
