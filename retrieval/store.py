"""ReferenceStore: a reference pool on disk, its patch embeddings and a FAISS index.

Layout of a store folder (written by `ReferenceStore.build`, read by `ReferenceStore.open`):

    store.json          what was built: embedder signature, config hash, index kind,
                        the data files' names and sha256, fingerprint
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

Patches follow ColorFlow (retrieval/patches.py): 5 per reference (full + 4 overlapping
3/4-size crops), 5 per query page (4 crops + full). Page-level reference scores are the
mean, over the query's 5 patches, of the best-matching patch of that reference.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from chromaflow.config import Config, load_config, validate_config
from chromaflow.models.colorizers.base import Reference
from chromaflow.models.lines import extract_lines
from chromaflow.storage.atomic import atomic_path, write_bytes, write_json
from chromaflow.storage.images import ImageError, decode_image, decode_png, encode_png, resize_longest
from chromaflow.storage.shards import sha256_file

from . import index as faiss_index
from .embedders import Embedder, build_embedder
from .identity import UNKNOWN, assign_identities, assign_scene_identities, identity_votes
from .patches import QUADRANTS, Box, crop, quadrant_boxes, reference_boxes
from .references import UNNAMED, ReferenceFolderError, scan_reference_folder

log = logging.getLogger(__name__)

STORE_FORMAT = 1
STORE_JSON, PATCHES_TABLE, EMBEDDINGS, INDEX_FILE, IMAGES_DIR = (
    "store.json", "patches.parquet", "embeddings.npy", "patches.faiss", "images")
EMBED_CHUNK = 32  # references embedded per call (CLIP batches across them)


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


def _query_view(image: np.ndarray, work_size: int) -> np.ndarray:
    return resize_longest(image, work_size)


@dataclass
class _Prepared:
    name: str
    identity: str
    sha256: str
    boxes: list[tuple[str, Box]]
    vectors: np.ndarray


class ReferenceStore:
    def __init__(self, root: Path, info: dict, table: pa.Table, embeddings: np.ndarray, index,
                 embedder: Embedder, config: Config):
        self.root = root
        self.info = info
        self.embedder = embedder
        self.config = config
        self.embeddings = embeddings
        self._index = index
        columns = table.to_pydict()
        self.patch_reference: list[str] = columns["reference"]
        self.patch_identity: list[str] = columns["identity"]
        self.patch_name: list[str] = columns["patch"]
        self.patch_box: list[tuple[int, int, int, int]] = list(
            zip(columns["x0"], columns["y0"], columns["x1"], columns["y1"]))
        self._reference_identity = dict(zip(self.patch_reference, self.patch_identity))
        self._reference_sha256 = dict(zip(self.patch_reference, columns["source_sha256"]))
        # Patch ids per identity, for restricted searches.
        self._identity_ids: dict[str, np.ndarray] = {}
        identity_array = np.asarray(self.patch_identity, dtype=object)
        for name in sorted(set(self.patch_identity)):
            self._identity_ids[name] = np.nonzero(identity_array == name)[0].astype(np.int64)

    # ------------------------------------------------------------------ properties
    @property
    def fingerprint(self) -> str:
        return self.info["fingerprint"]

    @property
    def identities(self) -> list[str]:
        """Identity pools in the store; "" is the unnamed pool."""
        return sorted(self._identity_ids)

    @property
    def references(self) -> list[str]:
        return sorted(self._reference_identity)

    def identity_of(self, name: str) -> str:
        """The pool a reference belongs to ("" = unnamed)."""
        return self._reference_identity[name]

    def reference_sha256(self, name: str) -> str:
        """sha256 of the reference's source file."""
        return self._reference_sha256[name]

    @property
    def index_kind(self) -> str:
        return self.info["index_kind"]

    def __len__(self) -> int:
        return len(self.patch_reference)

    # ------------------------------------------------------------------ build
    @classmethod
    def build(cls, refs_dir: str | Path, out_dir: str | Path, config: Config | None = None) -> "ReferenceStore":
        """Scan, decode, extract line art, embed and index a reference folder into out_dir.
        Unchanged files (same sha256, same embedding settings) reuse their stored vectors."""
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

        def flush() -> None:
            patches, owners = [], []
            for i, (entry, sha, color, lines) in enumerate(pending):
                source = lines if embedder.domain == "lines" else color
                for _, box in reference_boxes(color.shape[1], color.shape[0]):
                    patches.append(crop(source, box))
                    owners.append(i)
            vectors = embedder.embed(patches) if patches else np.zeros((0, embedder.dim), np.float32)
            owners_arr = np.asarray(owners)
            for i, (entry, sha, color, lines) in enumerate(pending):
                prepared.append(_Prepared(entry.name, entry.identity, sha,
                                          reference_boxes(color.shape[1], color.shape[0]),
                                          vectors[owners_arr == i]))
            pending.clear()

        for entry in entries:
            try:
                data = entry.path.read_bytes()
            except OSError as exc:
                _skip(skipped, f"{entry.path}: cannot read ({exc.strerror or exc}); reference skipped")
                continue
            sha = hashlib.sha256(data).hexdigest()
            old = previous.get(entry.name)
            if old is not None and old.sha256 == sha and _images_exist(out, entry.name):
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
            write_bytes(_image_path(out, entry.name, "color"), encode_png(color))
            write_bytes(_image_path(out, entry.name, "lines"), encode_png(lines))
            pending.append((entry, sha, color, lines))
            if len(pending) >= EMBED_CHUNK:
                flush()
        flush()
        if not prepared:
            raise ReferenceFolderError(f"{refs_dir}: no readable reference images ({len(skipped)} skipped)")
        order = {e.name: i for i, e in enumerate(entries)}
        prepared.sort(key=lambda p: order[p.name])  # folder order, whatever was reused
        return cls._write(out, prepared, embedder, config, config_hash, skipped, reused)

    @classmethod
    def _write(cls, out: Path, prepared: list[_Prepared], embedder: Embedder, config: Config,
               config_hash: str, skipped: list[str], reused: int) -> "ReferenceStore":
        rows: dict[str, list] = {k: [] for k in ("reference", "identity", "patch", "x0", "y0", "x1", "y1",
                                                  "source_sha256", "embedder", "embedder_version", "config_hash")}
        for ref in prepared:
            for patch, (x0, y0, x1, y1) in ref.boxes:
                for key, value in (("reference", ref.name), ("identity", ref.identity), ("patch", patch),
                                   ("x0", x0), ("y0", y0), ("x1", x1), ("y1", y1), ("source_sha256", ref.sha256),
                                   ("embedder", embedder.name), ("embedder_version", embedder.version),
                                   ("config_hash", config_hash)):
                    rows[key].append(value)
        embeddings = np.ascontiguousarray(np.concatenate([p.vectors for p in prepared]), dtype=np.float32)
        table = pa.table(rows)
        files, sums = {}, {}
        files[PATCHES_TABLE], sums[PATCHES_TABLE] = _write_versioned(out, PATCHES_TABLE,
                                                                     lambda tmp: pq.write_table(table, tmp))
        files[EMBEDDINGS], sums[EMBEDDINGS] = _write_versioned(out, EMBEDDINGS, lambda tmp: _save_npy(tmp, embeddings))
        faiss_index.set_threads(config.retrieval.num_threads)
        index = faiss_index.build_index(embeddings, config.retrieval)
        files[INDEX_FILE], sums[INDEX_FILE] = _write_versioned(
            out, INDEX_FILE, lambda tmp: faiss_index.faiss.write_index(index, str(tmp)))
        kind = faiss_index.index_kind(index)
        content = json.dumps({"references": [(p.name, p.identity, p.sha256) for p in prepared],
                              "embedder": embedder.signature, "config_hash": config_hash, "index_kind": kind},
                             sort_keys=True)
        info = {
            "format": STORE_FORMAT,
            "embedder": {"name": embedder.name, "version": embedder.version, "signature": embedder.signature,
                         "dim": int(embedder.dim), "domain": embedder.domain},
            "config_hash": config_hash,
            "config": {"retrieval": _retrieval_settings(config),
                       "lines": config.lines.model_dump(mode="json"),
                       "colorize": config.colorize.model_dump(mode="json")},
            "index_kind": kind,
            "files": files,
            "sha256": sums,
            "num_references": len(prepared),
            "num_patches": int(len(embeddings)),
            "identities": sorted({p.identity for p in prepared}),
            "skipped": skipped,
            "reused_references": reused,
            "fingerprint": hashlib.sha256(content.encode()).hexdigest(),
        }
        write_json(out / STORE_JSON, info)
        _remove_superseded_files(out, info)
        _remove_stale_images(out, {p.name for p in prepared})
        log.info("reference store %s: %d references (%d reused), %d patches, %s index",
                 out, len(prepared), reused, len(embeddings), kind)
        return cls(out, info, table, embeddings, faiss_index.to_search_device(index, config.retrieval.use_gpu),
                   embedder, config)

    # ------------------------------------------------------------------ open
    @classmethod
    def open(cls, out_dir: str | Path, config: Config | None = None) -> "ReferenceStore":
        """Open a built store. Without `config`, the settings it was built with are used.
        A config whose embedder differs from the store's is refused (EmbedderMismatchError)."""
        root = Path(out_dir)
        info_path = root / STORE_JSON
        if not info_path.exists():
            raise StoreError(f"{root}: not a reference index (no {STORE_JSON}); build it with `chromaflow index`")
        try:
            info = json.loads(info_path.read_text(encoding="utf-8"))
        except ValueError as exc:
            raise StoreError(f"{info_path}: unreadable ({exc})") from None
        if info.get("format") != STORE_FORMAT:
            raise StoreError(f"{info_path}: store format {info.get('format')} is not {STORE_FORMAT}; rebuild the index")
        if config is None:
            config = validate_config({**info["config"]}, origin=str(info_path))
        embedder = build_embedder(config)
        if embedder.signature != info["embedder"]["signature"]:
            raise EmbedderMismatchError(
                f"{root}: index was built with embedder {info['embedder']['signature']}, but the config asks for "
                f"{embedder.signature}; rebuild the index with `chromaflow index` or use the matching retrieval settings")
        for name in (PATCHES_TABLE, EMBEDDINGS):
            path = root / info["files"][name]
            if not path.exists() or sha256_file(path) != info["sha256"][name]:
                raise StoreError(f"{path}: missing or corrupted (checksum mismatch); rebuild with `chromaflow index`")
        table = pq.read_table(root / info["files"][PATCHES_TABLE])
        embeddings = np.load(root / info["files"][EMBEDDINGS], allow_pickle=False)
        faiss_index.set_threads(config.retrieval.num_threads)
        try:
            index = faiss_index.read_index(root / info["files"][INDEX_FILE], info["sha256"][INDEX_FILE])
        except faiss_index.IndexIntegrityError as exc:
            if config.retrieval.on_corrupt_index == "error":
                raise StoreError(f"{exc}; rebuild with `chromaflow index` "
                                 f"(or set retrieval.on_corrupt_index=rebuild)") from None
            # The embeddings passed their checksum, so the index can be rebuilt exactly.
            log.warning("%s; rebuilding it from %s", exc, info["files"][EMBEDDINGS])
            warnings.warn(f"{exc}; rebuilt from {info['files'][EMBEDDINGS]}", stacklevel=2)
            build_cfg = config.retrieval.model_copy(update={"index": info["index_kind"]})
            index = faiss_index.build_index(embeddings, build_cfg)
            info["files"][INDEX_FILE], info["sha256"][INDEX_FILE] = _write_versioned(
                root, INDEX_FILE, lambda tmp: faiss_index.faiss.write_index(index, str(tmp)))
            write_json(info_path, info)
            _remove_superseded_files(root, info)
        faiss_index.apply_search_params(index, config.retrieval)
        return cls(root, info, table, embeddings, faiss_index.to_search_device(index, config.retrieval.use_gpu),
                   embedder, config)

    # ------------------------------------------------------------------ search
    def check_identities(self, identities: list[str]) -> None:
        for name in identities:
            if name not in self._identity_ids:
                raise StoreError(f"identity {name!r} has no references in the pool {self.root} "
                                 f"(pools: {', '.join(repr(i) for i in self.identities)})")

    def _allowed_ids(self, identities: list[str] | None) -> np.ndarray | None:
        if identities is None:
            return None
        self.check_identities([i for i in identities if i != UNNAMED])
        pools = [self._identity_ids[i] for i in set(identities) | {UNNAMED} if i in self._identity_ids]
        return np.sort(np.concatenate(pools)) if pools else np.zeros(0, np.int64)

    def _search_vectors(self, vectors: np.ndarray, k: int, allowed: np.ndarray | None):
        k = min(k, len(self) if allowed is None else len(allowed))
        if k == 0:
            return np.zeros((len(vectors), 0), np.float32), np.zeros((len(vectors), 0), np.int64)
        if allowed is None or len(allowed) == len(self):
            return self._index.search(vectors, k)
        if faiss_index.supports_selector(self._index):
            params = _search_params(self._index, self.config.retrieval, faiss_index.faiss.IDSelectorBatch(allowed))
            return self._index.search(vectors, k, params=params)
        return self._search_filtered(vectors, k, allowed)

    def _search_filtered(self, vectors: np.ndarray, k: int, allowed: np.ndarray):
        """Restricted search for indexes without IDSelector support: fetch more hits until
        every query has k allowed ones (or the whole index was fetched), then filter."""
        keep = np.zeros(len(self), dtype=bool)
        keep[allowed] = True
        fetch = min(len(self), k * max(2, len(self) // max(1, len(allowed))))
        while True:
            scores, ids = self._index.search(vectors, fetch)
            mask = (ids >= 0) & keep[np.maximum(ids, 0)]
            if mask.sum(axis=1).min() >= k or fetch >= len(self):
                break
            fetch = min(len(self), fetch * 4)
        out_s = np.full((len(vectors), k), -np.inf, np.float32)
        out_i = np.full((len(vectors), k), -1, np.int64)
        for row in range(len(vectors)):
            hit = np.nonzero(mask[row])[0][:k]
            out_s[row, :len(hit)], out_i[row, :len(hit)] = scores[row, hit], ids[row, hit]
        return out_s, out_i

    def embed_page(self, page_lines: np.ndarray, page_rgb: np.ndarray) -> tuple[np.ndarray, list[Box], tuple[int, int]]:
        """The 5 query vectors (4 quadrants, then full) and the quadrant boxes in page pixels."""
        source = page_lines if self.embedder.domain == "lines" else page_rgb
        if source is None:
            raise StoreError(f"{self.root}: embedder {self.embedder.name} needs the page's "
                             f"{'line art' if self.embedder.domain == 'lines' else 'RGB image'}")
        h, w = source.shape[:2]
        view = _query_view(source, self.config.colorize.work_size)
        vh, vw = view.shape[:2]
        boxes = quadrant_boxes(vw, vh)
        patches = [crop(view, b) for b in boxes] + [view]
        vectors = np.ascontiguousarray(self.embedder.embed(patches), dtype=np.float32)
        sx, sy = w / vw, h / vh
        page_boxes = [(round(x0 * sx), round(y0 * sy), round(x1 * sx), round(y1 * sy)) for x0, y0, x1, y1 in boxes]
        return vectors, page_boxes, (w, h)

    def search_vectors(self, vectors: np.ndarray, top_k: int, identities: list[str] | None = None,
                       auto_assign: bool = True, unrestricted: tuple[np.ndarray, np.ndarray] | None = None) -> dict:
        """Search with precomputed query vectors (4 quadrants + full); see `search`.
        identities=None with auto_assign=False searches all pools without assigning.
        `unrestricted`: this page's rows of an earlier batched unrestricted search."""
        cfg = self.config.retrieval
        k = max(cfg.candidates_per_patch, top_k)
        # The unrestricted search gives the identity votes (always reported).
        scores, ids = unrestricted if unrestricted is not None else self._search_vectors(vectors, k, None)
        reference_scores = _pool_reference_scores(scores, ids, self.patch_reference)
        votes = identity_votes(reference_scores, self._reference_identity, cfg.identity_votes,
                               cfg.identity_temperature)
        if identities is not None:
            assigned, restrict = list(identities), list(identities)
        elif auto_assign:
            assigned = assign_identities(votes, cfg.min_identity_confidence)
            restrict = None if assigned == [UNKNOWN] else assigned
        else:
            assigned, restrict = [UNKNOWN], None
        if restrict is not None:
            # Only the assigned pools plus the unnamed pool.
            scores, ids = self._search_vectors(vectors, k, self._allowed_ids(restrict))
            reference_scores = _pool_reference_scores(scores, ids, self.patch_reference)
        ranked = sorted(reference_scores.items(), key=lambda kv: (-kv[1], kv[0]))[:top_k]
        quadrants = []
        for q in range(len(QUADRANTS)):
            hits = []
            for score, pid in zip(scores[q], ids[q]):
                if pid < 0:
                    continue
                hits.append({"name": self.patch_reference[pid], "identity": self.patch_identity[pid],
                             "score": round(float(score), 6), "patch": self.patch_name[pid],
                             "box": list(self.patch_box[pid])})
                if len(hits) == top_k:
                    break
            quadrants.append(hits)
        return {
            "references": [{"name": n, "identity": self._reference_identity[n], "score": round(float(s), 6)}
                           for n, s in ranked],
            "quadrants": quadrants,
            "identities": assigned,
            "identity_scores": {k2: round(float(v), 6) for k2, v in votes.items()},
            "store": self.fingerprint,
        }

    def search(self, page_lines: np.ndarray, page_rgb: np.ndarray | None, top_k: int | None = None,
               identities: list[str] | None = None) -> dict:
        """Retrieve references for one page. JSON-serializable result:

        references       top_k distinct reference files, best first, score pooled over the
                         page's 4 quadrant patches + full view
        quadrants        per quadrant (TL, TR, BL, BR) the top_k reference patches:
                         {name, identity, score, patch, box} (box in the stored reference image)
        identities       the pools searched: the given `identities`, or with None the ones
                         assigned automatically (["unknown"] when no identity is confident)
        identity_scores  vote share per identity ("" = unnamed pool) from the unrestricted
                         search, whatever `identities` is (sums to 1)
        """
        top_k = top_k or self.config.retrieval.top_k
        vectors, _, _ = self.embed_page(page_lines, page_rgb)
        return self.search_vectors(vectors, top_k, identities)

    def search_batch(self, pages: list[tuple[np.ndarray, np.ndarray | None]], top_k: int | None = None,
                     identities: list[str] | None = None, auto_assign: bool = True) -> list[dict]:
        """`search` for many pages: one batched FAISS query for all their patches (the
        identity-restricted second searches are per page). pages: [(lines, rgb)]."""
        top_k = top_k or self.config.retrieval.top_k
        if not pages:
            return []
        vectors = [self.embed_page(lines, rgb)[0] for lines, rgb in pages]
        k = max(self.config.retrieval.candidates_per_patch, top_k)
        scores, ids = self._search_vectors(np.ascontiguousarray(np.concatenate(vectors)), k, None)
        per_page = len(vectors[0])
        return [self.search_vectors(v, top_k, identities, auto_assign,
                                    (scores[i * per_page:(i + 1) * per_page], ids[i * per_page:(i + 1) * per_page]))
                for i, v in enumerate(vectors)]

    def search_scene(self, pages: list[tuple[np.ndarray, np.ndarray | None]], top_k: int | None = None,
                     identities: list[str] | None = None) -> list[dict]:
        """Search the frames of one scene (episodes) so they share one identity assignment.
        pages: [(lines, rgb)] of the scene's frames. With identities=None the frames' vote
        shares are averaged (`assign_scene_identities`) and every frame is searched with
        that assignment; explicit identities are used as given. Results are like `search`'s;
        `identity_scores` stay each frame's own."""
        if identities is not None:
            return self.search_batch(pages, top_k, identities)
        first = self.search_batch(pages, top_k, None, auto_assign=False)
        scene = assign_scene_identities([r["identity_scores"] for r in first],
                                        self.config.retrieval.min_identity_confidence)
        if scene == [UNKNOWN]:
            return first
        return self.search_batch(pages, top_k, scene)

    # ------------------------------------------------------------------ images
    def load_reference(self, name: str, score: float = 0.0) -> Reference:
        if name not in self._reference_identity:
            raise StoreError(f"{self.root}: no reference named {name!r}")
        color = decode_png(_image_path(self.root, name, "color").read_bytes())
        lines = decode_png(_image_path(self.root, name, "lines").read_bytes(), gray=True)
        return Reference(identity=self._reference_identity[name], name=name, color=color, lines=lines, score=score)

    def load_patch(self, name: str, box) -> np.ndarray:
        """RGB crop of a stored reference (box from a search result), for the canvas."""
        if name not in self._reference_identity:
            raise StoreError(f"{self.root}: no reference named {name!r}")
        color = decode_png(_image_path(self.root, name, "color").read_bytes())
        return np.ascontiguousarray(crop(color, tuple(int(v) for v in box)))


# ---------------------------------------------------------------------- helpers
def _retrieval_settings(config: Config) -> dict:
    """The retrieval section as stored with the index; a relative CLIP path is made
    absolute so `open` without a config works from any working directory."""
    settings = config.retrieval.model_dump(mode="json")
    if settings.get("clip_checkpoint"):
        settings["clip_checkpoint"] = str(Path(settings["clip_checkpoint"]).expanduser().resolve())
    return settings


def _skip(skipped: list[str], message: str) -> None:
    log.warning(message)
    warnings.warn(message, stacklevel=3)
    skipped.append(message)


def _save_npy(path: Path, array: np.ndarray) -> None:
    with open(path, "wb") as f:  # a file object: np.save would append ".npy" to a path
        np.save(f, array)


def _write_versioned(out: Path, logical: str, writer) -> tuple[str, str]:
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


def _remove_superseded_files(out: Path, info: dict) -> None:
    current = set(info["files"].values())
    for logical in (PATCHES_TABLE, EMBEDDINGS, INDEX_FILE):
        stem, _, suffix = logical.partition(".")
        for path in out.glob(f"{stem}.*.{suffix}"):
            if path.name not in current:
                path.unlink()


def _image_path(root: Path, name: str, kind: str) -> Path:
    return root / IMAGES_DIR / f"{name}.{kind}.png"


def _images_exist(root: Path, name: str) -> bool:
    return _image_path(root, name, "color").exists() and _image_path(root, name, "lines").exists()


def _remove_stale_images(root: Path, keep: set[str]) -> None:
    images = root / IMAGES_DIR
    if not images.exists():
        return
    wanted = {_image_path(root, n, k) for n in keep for k in ("color", "lines")}
    for path in images.rglob("*.png"):
        if path not in wanted:
            path.unlink()


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


def _search_params(index, cfg, selector):
    faiss = faiss_index.faiss
    base = faiss.downcast_index(index)
    if isinstance(base, faiss.IndexHNSW):
        params = faiss.SearchParametersHNSW()
        params.efSearch = cfg.hnsw_ef_search
    elif isinstance(base, faiss.IndexIVF):
        params = faiss.SearchParametersIVF()
        params.nprobe = min(cfg.ivf_nprobe, base.nlist)
    else:
        params = faiss.SearchParameters()
    params.sel = selector
    return params


def _pool_reference_scores(scores: np.ndarray, ids: np.ndarray, patch_reference: list[str]) -> dict[str, float]:
    """Per reference: mean over query patches of its best patch similarity. A reference missing
    from one query patch's candidate list gets that list's lowest score (an upper bound)."""
    per_query: list[dict[str, float]] = []
    for row_scores, row_ids in zip(scores, ids):
        best: dict[str, float] = {}
        for s, pid in zip(row_scores, row_ids):
            if pid < 0:
                continue
            name = patch_reference[pid]
            if name not in best:
                best[name] = float(s)  # rows are sorted best first
        per_query.append(best)
    names = set().union(*per_query) if per_query else set()
    pooled = {}
    for name in names:
        total = 0.0
        for best, row_scores, row_ids in zip(per_query, scores, ids):
            valid = row_scores[row_ids >= 0]
            floor = float(valid[-1]) if len(valid) else 0.0
            total += best.get(name, floor)
        pooled[name] = total / len(per_query)
    return pooled
