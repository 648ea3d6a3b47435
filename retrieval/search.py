"""The search side of a reference store: patch embeddings, the FAISS index and the embedder.

Query pages are cut like ColorFlow's (models/patches.py): 4 quadrant crops + the full
view. A reference's page-level score is the mean, over the query's 5 patches, of its
best-matching patch. Identities (ID pools) are assigned from those scores
(retrieval/identity.py) and the search is then restricted to the assigned pools plus the
unnamed pool. FAISS parameters live in retrieval/index.py.
"""

from __future__ import annotations

import logging
import warnings
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from chromaflow.conf import Config, validate_config
from chromaflow.storage.atomic import write_json
from chromaflow.storage.images import resize_longest

from . import index as faiss_index
from .embedders import Embedder, build_embedder
from .identity import UNKNOWN, UNNAMED, assign_identities, assign_scene_identities, identity_votes
from .images import ReferenceImages
from chromaflow.models.patches import QUADRANTS, Box, crop, quadrant_boxes
from .store_format import (EMBEDDINGS, INDEX_FILE, PATCHES_TABLE, STORE_JSON, EmbedderMismatchError, StoreError,
                           read_store_info, remove_superseded_files, verify_data_files, write_versioned)

log = logging.getLogger(__name__)


class ReferenceIndex(ReferenceImages):
    def __init__(self, root: Path, info: dict, table: pa.Table, embeddings: np.ndarray, index,
                 embedder: Embedder, config: Config):
        super().__init__(root, info)
        self.embedder = embedder
        self.config = config
        self.embeddings = embeddings
        faiss_index.apply_search_params(index, config.retrieval)
        self._index = faiss_index.to_search_device(index, config.retrieval.use_gpu)
        columns = table.to_pydict()
        self.patch_reference: list[str] = columns["reference"]
        self.patch_identity: list[str] = columns["identity"]
        self.patch_name: list[str] = columns["patch"]
        self.patch_box: list[tuple[int, int, int, int]] = list(
            zip(columns["x0"], columns["y0"], columns["x1"], columns["y1"]))
        # Patch ids per identity, for restricted searches.
        identity_array = np.asarray(self.patch_identity, dtype=object)
        self._identity_ids = {name: np.nonzero(identity_array == name)[0].astype(np.int64)
                              for name in sorted(set(self.patch_identity))}

    @classmethod
    def open(cls, root: str | Path, config: Config | None = None) -> "ReferenceIndex":
        """Open a built store. Without `config`, the settings it was built with are used.
        A config whose embedder differs from the store's is refused (EmbedderMismatchError)."""
        root = Path(root)
        info = read_store_info(root)
        if config is None:
            config = validate_config({**info["config"]}, origin=str(root / STORE_JSON))
        embedder = build_embedder(config)
        if embedder.signature != info["embedder"]["signature"]:
            raise EmbedderMismatchError(
                f"{root}: index was built with embedder {info['embedder']['signature']}, but the config asks for "
                f"{embedder.signature}; rebuild the index with `chromaflow index` or use the matching retrieval settings")
        verify_data_files(root, info)
        table = pq.read_table(root / info["files"][PATCHES_TABLE])
        embeddings = np.load(root / info["files"][EMBEDDINGS], allow_pickle=False)
        faiss_index.set_threads(config.retrieval.num_threads)
        index = _read_or_repair_index(root, info, embeddings, config)
        return cls(root, info, table, embeddings, index, embedder, config)

    @property
    def index_kind(self) -> str:
        return self.info["index_kind"]

    def __len__(self) -> int:
        return len(self.patch_reference)

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

    def _search(self, vectors: np.ndarray, k: int, allowed: np.ndarray | None):
        return faiss_index.search(self._index, vectors, k, self.config.retrieval, allowed)

    def embed_page(self, page_lines: np.ndarray, page_rgb: np.ndarray) -> tuple[np.ndarray, list[Box], tuple[int, int]]:
        """The 5 query vectors (4 quadrants, then full) and the quadrant boxes in page pixels."""
        source = page_lines if self.embedder.domain == "lines" else page_rgb
        if source is None:
            raise StoreError(f"{self.root}: embedder {self.embedder.name} needs the page's "
                             f"{'line art' if self.embedder.domain == 'lines' else 'RGB image'}")
        h, w = source.shape[:2]
        view = resize_longest(source, self.config.colorize.work_size)
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
        scores, ids = unrestricted if unrestricted is not None else self._search(vectors, k, None)
        reference_scores = pool_reference_scores(scores, ids, self.patch_reference)
        votes = identity_votes(reference_scores, self._identity, cfg.identity_votes, cfg.identity_temperature)
        if identities is not None:
            assigned, restrict = list(identities), list(identities)
        elif auto_assign:
            assigned = assign_identities(votes, cfg.min_identity_confidence)
            restrict = None if assigned == [UNKNOWN] else assigned
        else:
            assigned, restrict = [UNKNOWN], None
        if restrict is not None:
            # Only the assigned pools plus the unnamed pool.
            scores, ids = self._search(vectors, k, self._allowed_ids(restrict))
            reference_scores = pool_reference_scores(scores, ids, self.patch_reference)
        ranked = sorted(reference_scores.items(), key=lambda kv: (-kv[1], kv[0]))[:top_k]
        return {
            "references": [{"name": n, "identity": self._identity[n], "score": round(float(s), 6)}
                           for n, s in ranked],
            "quadrants": [self._quadrant_hits(scores[q], ids[q], top_k) for q in range(len(QUADRANTS))],
            "identities": assigned,
            "identity_scores": {name: round(float(v), 6) for name, v in votes.items()},
            "store": self.fingerprint,
        }

    def _quadrant_hits(self, scores: np.ndarray, ids: np.ndarray, top_k: int) -> list[dict]:
        hits = []
        for score, pid in zip(scores, ids):
            if pid < 0:
                continue
            hits.append({"name": self.patch_reference[pid], "identity": self.patch_identity[pid],
                         "score": round(float(score), 6), "patch": self.patch_name[pid],
                         "box": list(self.patch_box[pid])})
            if len(hits) == top_k:
                break
        return hits

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
        scores, ids = self._search(np.ascontiguousarray(np.concatenate(vectors)), k, None)
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


def _read_or_repair_index(root: Path, info: dict, embeddings: np.ndarray, config: Config):
    """The stored FAISS index; a corrupted one is rebuilt from the (checksummed) embeddings
    and written back, unless retrieval.on_corrupt_index is `error`."""
    try:
        return faiss_index.read_index(root / info["files"][INDEX_FILE], info["sha256"][INDEX_FILE])
    except faiss_index.IndexIntegrityError as exc:
        if config.retrieval.on_corrupt_index == "error":
            raise StoreError(f"{exc}; rebuild with `chromaflow index` "
                             f"(or set retrieval.on_corrupt_index=rebuild)") from None
        log.warning("%s; rebuilding it from %s", exc, info["files"][EMBEDDINGS])
        warnings.warn(f"{exc}; rebuilt from {info['files'][EMBEDDINGS]}", stacklevel=3)
        index = faiss_index.build_index(embeddings, config.retrieval.model_copy(update={"index": info["index_kind"]}))
        info["files"][INDEX_FILE], info["sha256"][INDEX_FILE] = write_versioned(
            root, INDEX_FILE, lambda tmp: faiss_index.save_index(index, tmp))
        write_json(root / STORE_JSON, info)
        remove_superseded_files(root, info)
        return index


def pool_reference_scores(scores: np.ndarray, ids: np.ndarray, patch_reference: list[str]) -> dict[str, float]:
    """Per reference: mean over query patches of its best patch similarity. A reference missing
    from one query patch's candidate list gets that list's lowest score (an upper bound)."""
    per_query: list[dict[str, float]] = []
    for row_scores, row_ids in zip(scores, ids):
        best: dict[str, float] = {}
        for s, pid in zip(row_scores, row_ids):
            if pid >= 0 and patch_reference[pid] not in best:
                best[patch_reference[pid]] = float(s)  # rows are sorted best first
        per_query.append(best)
    names = set().union(*per_query) if per_query else set()
    pooled = {}
    for name in names:
        total = 0.0
        for best, row_scores, row_ids in zip(per_query, scores, ids):
            valid = row_scores[row_ids >= 0]
            total += best.get(name, float(valid[-1]) if len(valid) else 0.0)
        pooled[name] = total / len(per_query)
    return pooled
