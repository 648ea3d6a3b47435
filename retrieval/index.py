"""FAISS vector index: chosen by size, persisted with a checksum, GPU when available.

Vectors are L2-normalised, so inner product = cosine similarity (METRIC_INNER_PRODUCT).
Index kind by pool size (`retrieval.index`):

- `flat` (exact IndexFlatIP) up to `flat_max_vectors`;
- beyond it, by `approximate_index`:
  `ivf`  IVF{nlist},Flat: k-means lists, cheap to build, GPU-friendly; the right choice for
         real embeddings, which cluster;
  `hnsw` IndexHNSWFlat: graph, no training, low latency, but slow to build on few cores;
  `pq`   PQ{d/2}x4fs,RFlat: 4-bit product-quantization fast-scan over all vectors, then the
         best `pq_refine_factor * k` are re-ranked exactly. Needs no structure in the data
         (the only approximate kind that keeps recall on unstructured vectors, see
         docs/benchmarks.md) and keeps a full copy of the vectors.

`auto` applies that rule; `flat`, `ivf`, `hnsw`, `pq` force a kind. A GPU copy is made for
search when faiss was built with GPU support and a GPU is visible (faiss-gpu wheel);
the index on disk is always the CPU version (GPU indexes cannot be written).
"""

from __future__ import annotations

import logging
import math
import os
from contextlib import contextmanager
from pathlib import Path

import numpy as np

try:
    import faiss
except ImportError:  # neither extra installed
    raise ImportError("faiss is not installed: pip install 'chromaflow[cpu]' (or 'chromaflow[gpu]' on a CUDA host)") from None

from chromaflow.storage.shards import sha256_file

log = logging.getLogger(__name__)

FLAT, IVF, HNSW, PQ = "flat", "ivf", "hnsw", "pq"


class IndexIntegrityError(ValueError):
    """An index file does not match the checksum recorded when it was written."""


def choose_index_kind(num_vectors: int, cfg) -> str:
    """`cfg` is a RetrievalConfig (or anything with the same attributes)."""
    if cfg.index != "auto":
        return cfg.index
    return FLAT if num_vectors <= cfg.flat_max_vectors else cfg.approximate_index


def ivf_nlist(num_vectors: int, cfg) -> int:
    """Number of IVF lists: config value, or the autofaiss rule (power of two near
    4*sqrt(n)), capped so each list gets at least ~39 training points."""
    if cfg.ivf_nlist:
        nlist = cfg.ivf_nlist
    else:
        nlist = 2 ** round(math.log2(max(1.0, 4 * math.sqrt(num_vectors))))
    return int(max(1, min(nlist, num_vectors // 39 or 1)))


# Below this many vectors, training/adding runs on one thread: OpenMP's spinning threads
# make small k-means jobs 10-30x slower on a busy machine, and one core is fast enough.
SINGLE_THREAD_BELOW = 50_000


@contextmanager
def _threads_for(num_vectors: int):
    previous = faiss.omp_get_max_threads()
    if num_vectors < SINGLE_THREAD_BELOW:
        faiss.omp_set_num_threads(1)
    try:
        yield
    finally:
        faiss.omp_set_num_threads(previous)


def build_index(vectors: np.ndarray, cfg, seed: int = 0) -> faiss.Index:
    """A CPU index holding `vectors` (n x d float32, ids = row numbers)."""
    with _threads_for(len(vectors)):
        return _build_index(vectors, cfg, seed)


def _build_index(vectors: np.ndarray, cfg, seed: int) -> faiss.Index:
    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    n, dim = vectors.shape
    kind = choose_index_kind(n, cfg)
    if kind == PQ and n < 16:
        log.warning("retrieval.index=pq needs at least 16 vectors to train (got %d); using flat", n)
        kind = FLAT
    if kind == FLAT:
        index = faiss.IndexFlatIP(dim)
    elif kind == HNSW:
        index = faiss.IndexHNSWFlat(dim, cfg.hnsw_m, faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efConstruction = cfg.hnsw_ef_construction
        index.hnsw.efSearch = cfg.hnsw_ef_search
    elif kind == IVF:
        nlist = ivf_nlist(n, cfg)
        quantizer = faiss.IndexFlatIP(dim)
        index = faiss.IndexIVFFlat(quantizer, dim, nlist, faiss.METRIC_INNER_PRODUCT)
        # Train on a sample: k-means cost grows with n, quality barely with points per list.
        index.cp.seed = seed
        index.train(_sample(vectors, nlist * cfg.ivf_train_per_list, seed))
        index.nprobe = min(cfg.ivf_nprobe, nlist)
    elif kind == PQ:
        index = faiss.index_factory(dim, f"PQ{pq_m(dim, cfg)}x4fs,RFlat", faiss.METRIC_INNER_PRODUCT)
        index.train(_sample(vectors, cfg.pq_train_points, seed))
        faiss.downcast_index(index).k_factor = cfg.pq_refine_factor
    else:
        raise ValueError(f"unknown index kind {kind!r}; expected flat, ivf or hnsw")
    if n:
        index.add(vectors)
    return index


def _sample(vectors: np.ndarray, count: int, seed: int) -> np.ndarray:
    if len(vectors) <= count:
        return vectors
    rng = np.random.default_rng(seed)
    return vectors[np.sort(rng.choice(len(vectors), count, replace=False))]


def pq_m(dim: int, cfg) -> int:
    """Sub-quantizers (4 bits each): config value, or one per 2 dimensions (rounded to a
    divisor of dim); 2 dims per code keeps recall >= 0.95 at refine 16-32 even on
    unstructured vectors (docs/benchmarks.md)."""
    if cfg.pq_m:
        if dim % cfg.pq_m:
            raise ValueError(f"retrieval.pq_m={cfg.pq_m} does not divide the embedding size {dim}")
        return cfg.pq_m
    m = max(1, dim // 2)
    while dim % m:
        m -= 1
    return m


def index_kind(index: faiss.Index) -> str:
    base = faiss.downcast_index(index)
    if isinstance(base, faiss.IndexRefine):
        return PQ
    if isinstance(base, faiss.IndexHNSW):
        return HNSW
    if isinstance(base, faiss.IndexIVF):
        return IVF
    return FLAT


def apply_search_params(index: faiss.Index, cfg) -> None:
    """Search-time knobs come from the current config, not from the file."""
    base = faiss.downcast_index(index)
    if isinstance(base, faiss.IndexHNSW):
        base.hnsw.efSearch = cfg.hnsw_ef_search
    elif isinstance(base, faiss.IndexIVF):
        base.nprobe = min(cfg.ivf_nprobe, base.nlist)
    elif isinstance(base, faiss.IndexRefine):
        base.k_factor = cfg.pq_refine_factor


def _selector_params(index: faiss.Index, cfg, allowed: np.ndarray) -> faiss.SearchParameters:
    """Per-search parameters restricted to `allowed` ids; the same knobs as apply_search_params."""
    base = faiss.downcast_index(index)
    if isinstance(base, faiss.IndexHNSW):
        params = faiss.SearchParametersHNSW()
        params.efSearch = cfg.hnsw_ef_search
    elif isinstance(base, faiss.IndexIVF):
        params = faiss.SearchParametersIVF()
        params.nprobe = min(cfg.ivf_nprobe, base.nlist)
    else:
        params = faiss.SearchParameters()
    params.sel = faiss.IDSelectorBatch(allowed)
    return params


def search(index: faiss.Index, vectors: np.ndarray, k: int, cfg,
           allowed: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(scores, ids) of the k best vectors, optionally only among the `allowed` ids.
    Missing hits have id -1."""
    total = index.ntotal
    k = min(k, total if allowed is None else len(allowed))
    if k == 0:
        return np.zeros((len(vectors), 0), np.float32), np.zeros((len(vectors), 0), np.int64)
    if allowed is None or len(allowed) == total:
        return index.search(vectors, k)
    if supports_selector(index):
        return index.search(vectors, k, params=_selector_params(index, cfg, allowed))
    return _search_filtered(index, vectors, k, allowed)


def _search_filtered(index: faiss.Index, vectors: np.ndarray, k: int, allowed: np.ndarray):
    """Restricted search for indexes without IDSelector support: fetch more hits until
    every query has k allowed ones (or the whole index was fetched), then filter."""
    total = index.ntotal
    keep = np.zeros(total, dtype=bool)
    keep[allowed] = True
    fetch = min(total, k * max(2, total // max(1, len(allowed))))
    while True:
        scores, ids = index.search(vectors, fetch)
        mask = (ids >= 0) & keep[np.maximum(ids, 0)]
        if mask.sum(axis=1).min() >= k or fetch >= total:
            break
        fetch = min(total, fetch * 4)
    out_s = np.full((len(vectors), k), -np.inf, np.float32)
    out_i = np.full((len(vectors), k), -1, np.int64)
    for row in range(len(vectors)):
        hit = np.nonzero(mask[row])[0][:k]
        out_s[row, :len(hit)], out_i[row, :len(hit)] = scores[row, hit], ids[row, hit]
    return out_s, out_i


def supports_selector(index: faiss.Index) -> bool:
    """Fast-scan PQ and GPU indexes ignore or reject IDSelectors: restricted searches
    over-fetch and filter instead."""
    if hasattr(faiss, "GpuIndex") and isinstance(index, faiss.GpuIndex):
        return False
    return index_kind(index) != PQ


def gpu_available() -> bool:
    return hasattr(faiss, "StandardGpuResources") and faiss.get_num_gpus() > 0


def to_search_device(index: faiss.Index, use_gpu: str | bool = "auto") -> faiss.Index:
    """GPU copy of the index when asked/possible (`auto`: when faiss-gpu sees a GPU).
    HNSW and fast-scan PQ have no GPU version in faiss and stay on the CPU."""
    wanted = gpu_available() if use_gpu == "auto" else bool(use_gpu)
    if not wanted or index_kind(index) in (HNSW, PQ):
        return index
    if not gpu_available():
        raise RuntimeError("retrieval.use_gpu=true but this faiss build has no GPU support or sees no GPU "
                           "(install the `gpu` extra: faiss-gpu)")
    resources = faiss.StandardGpuResources()
    gpu_index = faiss.index_cpu_to_gpu(resources, 0, index)
    gpu_index.referenced_resources = resources  # keep alive as long as the index
    return gpu_index


def save_index(index: faiss.Index, path: str | Path) -> None:
    """Write a CPU index to `path` (callers make the write atomic)."""
    faiss.write_index(index, str(path))


def read_index(path: str | Path, expected_sha256: str) -> faiss.Index:
    """Read an index after checking its checksum; IndexIntegrityError names the file."""
    path = Path(path)
    if not path.exists():
        raise IndexIntegrityError(f"{path}: index file is missing")
    actual = sha256_file(path)
    if actual != expected_sha256:
        raise IndexIntegrityError(f"{path}: index file is corrupted (sha256 {actual[:12]}..., "
                                  f"metadata says {expected_sha256[:12]}...)")
    return faiss.read_index(str(path))


def set_threads(num_threads: int | None) -> None:
    """FAISS uses OpenMP; 0/None keeps its default (all cores or OMP_NUM_THREADS)."""
    if num_threads:
        faiss.omp_set_num_threads(int(num_threads))
    elif "OMP_NUM_THREADS" in os.environ:
        faiss.omp_set_num_threads(int(os.environ["OMP_NUM_THREADS"]))
