"""The on-disk format of a reference store folder (versioned; docs/retrieval.md).

    store.json              what was built: format, embedder signature, config hash, index
                            kind, the references (name, identity, sha256), the data files'
                            names and sha256, fingerprint
    patches.<sha>.parquet   one row per patch vector (row = FAISS id): reference name,
                            identity, patch (full/tl/tr/bl/br), box, source sha256, embedder
                            name + version, config hash
    embeddings.<sha>.npy    the patch vectors (n x dim float32); reused by incremental
                            builds and used to rebuild a corrupted index
    patches.<sha>.faiss     the FAISS index over the embeddings
    images/<name>.color.png, images/<name>.lines.png
                            each reference scaled to <= colorize.work_size and its line art

Data files are named by content and `store.json` (written atomically, last) names the
current ones, so a build killed half-way leaves the previous store intact; superseded
files are deleted after the switch. (Images of changed references are replaced in place.)
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Callable

import numpy as np

from chromaflow.conf import Config
from chromaflow.storage.atomic import atomic_path
from chromaflow.storage.shards import sha256_file

# 2: store.json lists the references, so images can be read without the index.
STORE_FORMAT = 2
STORE_JSON, PATCHES_TABLE, EMBEDDINGS, INDEX_FILE, IMAGES_DIR = (
    "store.json", "patches.parquet", "embeddings.npy", "patches.faiss", "images")


class StoreError(ValueError):
    """A store cannot be built, opened or queried; str() is one line naming the path or identity."""


class EmbedderMismatchError(StoreError):
    """The store was built with another embedder (or other embedder settings)."""


def embedding_config_hash(config: Config, signature: str) -> str:
    """Everything that changes a reference's stored images or vectors."""
    payload = json.dumps({"lines": config.lines.model_dump(mode="json"),
                          "colorize_work_size": config.colorize.work_size,
                          "embedder": signature}, sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()


def read_store_info(root: str | Path) -> dict:
    """store.json of a built store of this format; StoreError naming the file otherwise."""
    root = Path(root)
    info_path = root / STORE_JSON
    if not info_path.exists():
        raise StoreError(f"{root}: not a reference index (no {STORE_JSON}); build it with `chromaflow index`")
    try:
        info = json.loads(info_path.read_text(encoding="utf-8"))
    except ValueError as exc:
        raise StoreError(f"{info_path}: unreadable ({exc})") from None
    if info.get("format") != STORE_FORMAT:
        raise StoreError(f"{info_path}: store format {info.get('format')} is not {STORE_FORMAT}; rebuild the index")
    return info


def store_fingerprint(root: str | Path) -> str:
    """What a stage that reads the store depends on (cheap: store.json only)."""
    return read_store_info(root)["fingerprint"]


def verify_data_files(root: Path, info: dict) -> None:
    """The patch table and embeddings match the checksums in store.json."""
    for name in (PATCHES_TABLE, EMBEDDINGS):
        path = root / info["files"][name]
        if not path.exists() or sha256_file(path) != info["sha256"][name]:
            raise StoreError(f"{path}: missing or corrupted (checksum mismatch); rebuild with `chromaflow index`")


def write_versioned(out: Path, logical: str, writer: Callable[[Path], None]) -> tuple[str, str]:
    """Write a data file atomically under a content-addressed name, e.g. patches.parquet ->
    patches.<sha16>.parquet. Returns (file name, sha256)."""
    stem, _, suffix = logical.partition(".")
    partial = out / f"{stem}.partial.{suffix}"
    with atomic_path(partial) as tmp:
        writer(tmp)
    sha = sha256_file(partial)
    name = f"{stem}.{sha[:16]}.{suffix}"
    os.replace(partial, out / name)
    return name, sha


def save_npy(path: Path, array: np.ndarray) -> None:
    with open(path, "wb") as f:  # a file object: np.save would append ".npy" to a path
        np.save(f, array)


def remove_superseded_files(out: Path, info: dict) -> None:
    current = set(info["files"].values())
    for logical in (PATCHES_TABLE, EMBEDDINGS, INDEX_FILE):
        stem, _, suffix = logical.partition(".")
        for path in out.glob(f"{stem}.*.{suffix}"):
            if path.name not in current:
                path.unlink()


def image_path(root: Path, name: str, kind: str) -> Path:
    """kind: "color" or "lines"."""
    return root / IMAGES_DIR / f"{name}.{kind}.png"


def images_exist(root: Path, name: str) -> bool:
    return image_path(root, name, "color").exists() and image_path(root, name, "lines").exists()


def remove_stale_images(root: Path, keep: set[str]) -> None:
    images = root / IMAGES_DIR
    if not images.exists():
        return
    wanted = {image_path(root, n, k) for n in keep for k in ("color", "lines")}
    for path in images.rglob("*.png"):
        if path not in wanted:
            path.unlink()
