"""Building a reference store: scan, decode, extract line art, embed and index a reference
folder (format: retrieval/store_format.py).

Incremental: a reference whose file (sha256) and embedding settings are unchanged reuses
its stored vectors and images, so re-indexing a grown pool embeds only the new files.
Patches follow ColorFlow (models/patches.py): 5 per reference (full + 4 overlapping
3/4-size crops).
"""

from __future__ import annotations

import hashlib
import json
import logging
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from chromaflow.conf import Config, load_config
from chromaflow.models.lines import extract_lines
from chromaflow.storage.atomic import write_bytes, write_json
from chromaflow.storage.images import ImageError, decode_image, encode_png, resize_longest
from chromaflow.storage.shards import sha256_file

from . import index as faiss_index
from .embedders import Embedder, build_embedder
from chromaflow.models.patches import Box, crop, reference_boxes
from .references import ReferenceFolderError, scan_reference_folder
from .search import ReferenceIndex
from .store_format import (EMBEDDINGS, INDEX_FILE, PATCHES_TABLE, STORE_FORMAT, STORE_JSON, embedding_config_hash,
                           image_path, images_exist, remove_stale_images, remove_superseded_files, save_npy,
                           write_versioned)

log = logging.getLogger(__name__)

EMBED_CHUNK = 32  # references embedded per call (CLIP batches across them)
PATCH_COLUMNS = ("reference", "identity", "patch", "x0", "y0", "x1", "y1", "source_sha256", "embedder",
                 "embedder_version", "config_hash")


@dataclass
class _Prepared:
    name: str
    identity: str
    sha256: str
    boxes: list[tuple[str, Box]]
    vectors: np.ndarray


def build_store(refs_dir: str | Path, out_dir: str | Path, config: Config | None = None) -> ReferenceIndex:
    """Index a reference folder into out_dir; returns the opened index. Unreadable
    references are skipped with a warning naming the file (listed in store.json)."""
    config = config or load_config()
    refs_dir, out = Path(refs_dir), Path(out_dir)
    entries = scan_reference_folder(refs_dir)
    embedder = build_embedder(config)
    config_hash = embedding_config_hash(config, embedder.signature)
    previous = _previous_vectors(out, config_hash)
    prepared: list[_Prepared] = []
    skipped: list[str] = []
    pending: list[tuple] = []  # (entry, sha, color, lines) waiting to be embedded
    reused = 0
    for entry in entries:
        try:
            data = entry.path.read_bytes()
        except OSError as exc:
            _skip(skipped, f"{entry.path}: cannot read ({exc.strerror or exc}); reference skipped")
            continue
        sha = hashlib.sha256(data).hexdigest()
        old = previous.get(entry.name)
        if old is not None and old.sha256 == sha and images_exist(out, entry.name):
            prepared.append(_Prepared(entry.name, entry.identity, sha, old.boxes, old.vectors))
            reused += 1
            continue
        try:
            rgb = decode_image(data, str(entry.path), config.job.max_image_pixels, config.job.max_image_side)
        except ImageError as exc:
            _skip(skipped, f"{exc}; reference skipped")
            continue
        color = resize_longest(rgb, config.colorize.work_size)
        lines = extract_lines(color, config.lines).lines
        write_bytes(image_path(out, entry.name, "color"), encode_png(color))
        write_bytes(image_path(out, entry.name, "lines"), encode_png(lines))
        pending.append((entry, sha, color, lines))
        if len(pending) >= EMBED_CHUNK:
            prepared += _embed(pending, embedder)
            pending = []
    prepared += _embed(pending, embedder)
    if not prepared:
        raise ReferenceFolderError(f"{refs_dir}: no readable reference images ({len(skipped)} skipped)")
    order = {e.name: i for i, e in enumerate(entries)}
    prepared.sort(key=lambda p: order[p.name])  # folder order, whatever was reused
    return _write_store(out, prepared, embedder, config, config_hash, skipped, reused)


def _embed(pending: list[tuple], embedder: Embedder) -> list[_Prepared]:
    """Embed the 5 patches of each pending reference in one call."""
    patches, owners = [], []
    for i, (entry, sha, color, lines) in enumerate(pending):
        source = lines if embedder.domain == "lines" else color
        for _, box in reference_boxes(color.shape[1], color.shape[0]):
            patches.append(crop(source, box))
            owners.append(i)
    if not patches:
        return []
    vectors = embedder.embed(patches)
    owners_arr = np.asarray(owners)
    return [_Prepared(entry.name, entry.identity, sha, reference_boxes(color.shape[1], color.shape[0]),
                      vectors[owners_arr == i]) for i, (entry, sha, color, lines) in enumerate(pending)]


def _patch_table(prepared: list[_Prepared], embedder: Embedder, config_hash: str) -> pa.Table:
    rows: dict[str, list] = {k: [] for k in PATCH_COLUMNS}
    for ref in prepared:
        for patch, (x0, y0, x1, y1) in ref.boxes:
            values = (ref.name, ref.identity, patch, x0, y0, x1, y1, ref.sha256, embedder.name, embedder.version,
                      config_hash)
            for key, value in zip(PATCH_COLUMNS, values):
                rows[key].append(value)
    return pa.table(rows)


def _write_store(out: Path, prepared: list[_Prepared], embedder: Embedder, config: Config, config_hash: str,
                 skipped: list[str], reused: int) -> ReferenceIndex:
    embeddings = np.ascontiguousarray(np.concatenate([p.vectors for p in prepared]), dtype=np.float32)
    table = _patch_table(prepared, embedder, config_hash)
    files, sums = {}, {}
    files[PATCHES_TABLE], sums[PATCHES_TABLE] = write_versioned(out, PATCHES_TABLE, lambda tmp: pq.write_table(table, tmp))
    files[EMBEDDINGS], sums[EMBEDDINGS] = write_versioned(out, EMBEDDINGS, lambda tmp: save_npy(tmp, embeddings))
    faiss_index.set_threads(config.retrieval.num_threads)
    index = faiss_index.build_index(embeddings, config.retrieval)
    files[INDEX_FILE], sums[INDEX_FILE] = write_versioned(out, INDEX_FILE, lambda tmp: faiss_index.save_index(index, tmp))
    kind = faiss_index.index_kind(index)
    references = [[p.name, p.identity, p.sha256] for p in prepared]
    content = json.dumps({"references": [tuple(r) for r in references], "embedder": embedder.signature,
                          "config_hash": config_hash, "index_kind": kind}, sort_keys=True)
    info = {
        "format": STORE_FORMAT,
        "embedder": {"name": embedder.name, "version": embedder.version, "signature": embedder.signature,
                     "dim": int(embedder.dim), "domain": embedder.domain},
        "config_hash": config_hash,
        "config": {"retrieval": _retrieval_settings(config), "lines": config.lines.model_dump(mode="json"),
                   "colorize": config.colorize.model_dump(mode="json")},
        "index_kind": kind,
        "files": files,
        "sha256": sums,
        "references": references,
        "num_references": len(prepared),
        "num_patches": int(len(embeddings)),
        "identities": sorted({p.identity for p in prepared}),
        "skipped": skipped,
        "reused_references": reused,
        "fingerprint": hashlib.sha256(content.encode()).hexdigest(),
    }
    write_json(out / STORE_JSON, info)
    remove_superseded_files(out, info)
    remove_stale_images(out, {p.name for p in prepared})
    log.info("reference store %s: %d references (%d reused), %d patches, %s index",
             out, len(prepared), reused, len(embeddings), kind)
    return ReferenceIndex(out, info, table, embeddings, index, embedder, config)


def _retrieval_settings(config: Config) -> dict:
    """The retrieval section as stored with the index; a relative CLIP path is made
    absolute so opening without a config works from any working directory."""
    settings = config.retrieval.model_dump(mode="json")
    if settings.get("clip_checkpoint"):
        settings["clip_checkpoint"] = str(Path(settings["clip_checkpoint"]).expanduser().resolve())
    return settings


def _skip(skipped: list[str], message: str) -> None:
    log.warning(message)
    warnings.warn(message, stacklevel=3)
    skipped.append(message)


def _previous_vectors(out: Path, config_hash: str) -> dict[str, _Prepared]:
    """Vectors of an existing store built with the same embedding settings, by reference name.
    Anything unreadable or mismatched means: embed everything again."""
    try:
        info = json.loads((out / STORE_JSON).read_text(encoding="utf-8"))
        if info.get("format") != STORE_FORMAT or info.get("config_hash") != config_hash:
            return {}
        for name in (PATCHES_TABLE, EMBEDDINGS):
            if sha256_file(out / info["files"][name]) != info["sha256"][name]:
                log.warning("%s: checksum mismatch; embedding all references again", out / info["files"][name])
                return {}
        table = pq.read_table(out / info["files"][PATCHES_TABLE]).to_pydict()
        embeddings = np.load(out / info["files"][EMBEDDINGS], allow_pickle=False)
    except (OSError, ValueError, KeyError):
        return {}
    rows: dict[str, list[int]] = {}
    for i, name in enumerate(table["reference"]):
        rows.setdefault(name, []).append(i)
    previous = {}
    for name, idx in rows.items():
        boxes = [(table["patch"][i], (table["x0"][i], table["y0"][i], table["x1"][i], table["y1"][i])) for i in idx]
        previous[name] = _Prepared(name, table["identity"][idx[0]], table["source_sha256"][idx[0]], boxes,
                                   embeddings[idx])
    return previous
