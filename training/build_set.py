"""build-training-set: training shards from a colored archive (see dataset.py for the format).

1. `plan_training_set`: list chapters, hold back `train.validation_chapters` of them (by
   seed) for validation, decode every page once (corrupt ones skipped with a warning), store
   it at training size in DATA/pool/<split>/<chapter>/<key>.png, and cut each split into
   shards of `train.shard_size` pages (DATA/plan.json).
2. `build_index`: a reference store (retrieval/store.py, the configured embedder) over each
   split's pool. Splits never see each other's pages: validation pages stay unseen.
3. `build_shard`: per page the gray page, its line art (models/lines.extract_lines), a
   screenstyle variant with a random recorded weight, and the top `refs_per_quadrant`
   patches per page quadrant retrieved from *other* pages (never the page itself; in
   episodes never a frame within +-`exclude_neighbors`), cropped from the store. The shard
   tar, then its stats (the done marker): a rerun skips shards whose inputs and settings are
   unchanged. Every random choice derives from (train.seed, page key): deterministic.
4. `finish_training_set`: DATA/dataset.json, written last.
"""

from __future__ import annotations

import hashlib
import json
import time
import zlib
from pathlib import Path

import cv2
import numpy as np

from chromaflow.conf import Config
from chromaflow.retrieval.build import build_store
from chromaflow.retrieval.search import ReferenceIndex
from chromaflow.models.lines import extract_lines
from chromaflow.storage.atomic import write_bytes, write_json
from chromaflow.storage.images import decode_png, encode_png
from chromaflow.storage.shards import sha256_file, write_shard
from chromaflow.storage.sources import EPISODE

from .archive import iter_pages, list_chapters, skip_warning
from .augment import patch_shuffle
from .instance_crops import instance_crops
from .dataset import DATASET_FORMAT, DATASET_JSON, SPLITS, TrainPage, encode_page, shard_name
from .screentone import render_screentone, screenstyle_variant

PLAN_JSON, POOL, INDEX = "plan.json", "pool", "index"
PATCHES_PER_REFERENCE = 5  # a stored page has 5 patches (full + 4 quadrants)
BUILD_KEYS = ("train.seed", "train.page_max_side", "train.shard_size", "train.validation_chapters",
              "train.refs_per_quadrant", "train.exclude_neighbors", "train.screen_weight", "train.screen_period",
              "train.shuffled_references", "train.shuffle_grids", "lines", "retrieval", "colorize.work_size")
INSTANCE_CROP_KEYS = ("train.instance_crops", "instances")  # count only when instance crops are on


class PageSkipped(ValueError):
    """A page that cannot become a training sample (one line naming it)."""


def build_config_hash(config: Config) -> str:
    return config.section_hash(*BUILD_KEYS, *(INSTANCE_CROP_KEYS if config.train.instance_crops else ()))


def page_rng(seed: int, key: str, purpose: str) -> np.random.Generator:
    return np.random.default_rng([seed, zlib.crc32(key.encode()), zlib.crc32(purpose.encode())])


def choose_splits(num_chapters: int, config: Config) -> list[str]:
    held = min(config.train.validation_chapters, max(0, num_chapters - 1))
    if config.train.validation_chapters and held == 0:
        skip_warning("only one chapter: no validation split (validation needs at least two chapters)")
    chosen = set(np.random.default_rng([config.train.seed, 7]).choice(num_chapters, size=held, replace=False).tolist())
    return ["validation" if i in chosen else "train" for i in range(num_chapters)]


def plan_training_set(src: str | Path, out: str | Path, config: Config) -> dict:
    """Steps 1: chapters, split, staged pages, shard plan (DATA/plan.json)."""
    out = Path(out)
    (out / DATASET_JSON).unlink(missing_ok=True)  # the set is incomplete until step 4 rewrites it
    chapters = list_chapters(src)
    splits = choose_splits(len(chapters), config)
    skipped: list[str] = []
    pages: dict[str, dict] = {}
    for chapter, split in zip(chapters, splits):
        for index, name, rgb in iter_pages(chapter, config, skipped):
            key = f"{chapter.tag}p{index:05d}"
            staged = Path(POOL) / split / chapter.tag / f"{key}.png"
            data = encode_png(rgb)
            target = out / staged
            if not target.is_file() or target.read_bytes() != data:
                write_bytes(target, data)
            pages[key] = {"key": key, "chapter": chapter.tag, "kind": chapter.kind, "index": index, "source": name,
                          "split": split, "staged": staged.as_posix(), "sha256": hashlib.sha256(data).hexdigest()}
    _remove_unplanned(out, {p["staged"] for p in pages.values()})
    size = config.train.shard_size
    shards = {}
    for split in SPLITS:
        keys = [k for k, p in pages.items() if p["split"] == split]
        shards[split] = [keys[i:i + size] for i in range(0, len(keys), size)]
    plan = {"source": str(Path(src).resolve()), "pages": pages, "shards": shards, "skipped": skipped,
            "chapters": [{"tag": c.tag, "source": str(c.source), "kind": c.kind, "split": s}
                         for c, s in zip(chapters, splits)], "config_sha256": build_config_hash(config)}
    write_json(out / PLAN_JSON, plan)
    return plan


def _remove_unplanned(out: Path, planned: set[str]) -> None:
    """Pages no longer in the archive must not stay in the retrieval pool."""
    for path in (out / POOL).rglob("*.png") if (out / POOL).is_dir() else []:
        if path.relative_to(out).as_posix() not in planned:
            path.unlink()


def read_plan(out: str | Path) -> dict:
    return json.loads((Path(out) / PLAN_JSON).read_text())


def build_index(out: str | Path, split: str, config: Config) -> str | None:
    """Step 2: the split's reference store; returns its fingerprint (None: empty split)."""
    pool = Path(out) / POOL / split
    if not pool.is_dir() or not any(pool.rglob("*.png")):
        return None
    return build_store(pool, Path(out) / INDEX / split, config).fingerprint


def _store_name(page: dict) -> str:
    return f"{page['chapter']}/{page['key']}.png"


def excluded_names(plan: dict, page: dict, neighbors: int) -> set[str]:
    """The page itself and, in episodes, the frames within +-neighbors of it."""
    names = {_store_name(page)}
    if page["kind"] == EPISODE:
        names |= {_store_name(p) for p in plan["pages"].values()
                  if p["chapter"] == page["chapter"] and abs(p["index"] - page["index"]) <= neighbors}
    return names


def retrieve_references(store, lines: np.ndarray, color: np.ndarray, excluded: set[str], k: int, key: str):
    """Per quadrant the top-k hits from other pages (padded by repeating when the pool is small)."""
    vectors, _, _ = store.embed_page(lines, color)
    wanted = k + PATCHES_PER_REFERENCE * len(excluded)
    result = store.search_vectors(vectors, wanted, identities=None, auto_assign=False)
    quadrants = []
    for hits in result["quadrants"]:
        kept = [h for h in hits if h["name"] not in excluded][:k]
        if not kept:
            raise PageSkipped(f"{key}: no other page in its split to take references from; page skipped")
        quadrants.append([kept[i % len(kept)] for i in range(k)])
    return quadrants


def make_sample(plan: dict, page: dict, color: np.ndarray, store, config: Config) -> TrainPage:
    """One page's training sample (step 3)."""
    cfg = config.train
    key = page["key"]
    gray = cv2.cvtColor(color, cv2.COLOR_RGB2GRAY)
    lines = extract_lines(color, config.lines).lines
    rng = page_rng(cfg.seed, key, "screen")
    weight, period = float(rng.uniform(*cfg.screen_weight)), float(rng.uniform(*cfg.screen_period))
    screen = screenstyle_variant(gray, render_screentone(gray, period), weight)
    hits = retrieve_references(store, lines, color, excluded_names(plan, page, cfg.exclude_neighbors),
                               cfg.refs_per_quadrant, key)
    patches = [[store.load_patch(h["name"], h["box"]) for h in quadrant] for quadrant in hits]
    references = [[{"page": Path(h["name"]).stem, "chapter": h["identity"], "box": h["box"], "score": h["score"],
                    "patch": h["patch"]} for h in quadrant] for quadrant in hits]
    shuffled, grids = None, None
    if cfg.shuffled_references:
        shuffle_rng = page_rng(cfg.seed, key, "shuffle")
        grids = [[int(shuffle_rng.choice(cfg.shuffle_grids)) for _ in quadrant] for quadrant in patches]
        shuffled = [[patch_shuffle(p, g, shuffle_rng) for p, g in zip(quadrant, gq)]
                    for quadrant, gq in zip(patches, grids)]
    meta = {"chapter": page["chapter"], "source": page["source"], "index": page["index"], "split": page["split"],
            "screen_weight": weight, "screen_period": period, "references": references, "shuffle_grids": grids}
    crops = []
    if cfg.instance_crops:
        crops, meta["instances"] = instance_crops(color, lines, config)
    return TrainPage(key, color, gray, lines, screen, patches, meta, shuffled, crops)


def shard_paths(out: Path, split: str, shard: int) -> tuple[Path, Path]:
    base = out / split / shard_name(shard)
    return base.with_suffix(".tar"), base.with_name(base.name + ".stats.json")


def _shard_fingerprint(plan: dict, keys: list[str], store_fingerprint: str | None) -> str:
    parts = [plan["config_sha256"], store_fingerprint or ""] + [f"{k}:{plan['pages'][k]['sha256']}" for k in keys]
    return hashlib.sha256("|".join(parts).encode()).hexdigest()


def shard_is_done(out: Path, split: str, shard: int, fingerprint: str) -> dict | None:
    tar, stats_path = shard_paths(out, split, shard)
    try:
        stats = json.loads(stats_path.read_text())
    except (FileNotFoundError, ValueError):
        return None
    ok = stats.get("input_sha256") == fingerprint and tar.is_file() and tar.stat().st_size == stats.get("output_bytes")
    return stats if ok else None


def build_shard(out: str | Path, split: str, shard: int, config: Config) -> dict:
    """Step 3 for one shard; a finished shard with the same inputs is kept as is."""
    out = Path(out)
    plan = read_plan(out)
    keys = plan["shards"][split][shard]
    store = ReferenceIndex.open(out / INDEX / split, config)
    fingerprint = _shard_fingerprint(plan, keys, store.fingerprint)
    done = shard_is_done(out, split, shard, fingerprint)
    if done is not None:
        return dict(done, cached=True)
    started = time.time()
    samples, skipped, weights, scores = [], [], [], []
    for key in keys:
        page = plan["pages"][key]
        try:
            sample = make_sample(plan, page, decode_png((out / page["staged"]).read_bytes()), store, config)
        except PageSkipped as exc:
            skipped.append(skip_warning(str(exc)))
            continue
        samples.append(encode_page(sample))
        weights.append(sample.meta["screen_weight"])
        scores += [r["score"] for quadrant in sample.meta["references"] for r in quadrant]
    tar, stats_path = shard_paths(out, split, shard)
    write_shard(tar, samples)
    stats = {"split": split, "shard": shard, "count": len(samples), "keys": [s["__key__"] for s in samples],
             "skipped": skipped, "screen_weight_mean": float(np.mean(weights)) if weights else None,
             "reference_score_mean": float(np.mean(scores)) if scores else None,
             "input_sha256": fingerprint, "output_sha256": sha256_file(tar), "output_bytes": tar.stat().st_size,
             "seconds": round(time.time() - started, 3)}
    write_json(stats_path, stats)  # last: the shard's done marker
    return dict(stats, cached=False)


def finish_training_set(out: str | Path, config: Config, shard_stats: list[dict]) -> dict:
    """Step 4: DATA/dataset.json (written last: its presence means the set is complete)."""
    out = Path(out)
    plan = read_plan(out)
    splits = {}
    for split in SPLITS:
        mine = sorted((s for s in shard_stats if s["split"] == split), key=lambda s: s["shard"])
        splits[split] = {"shards": [shard_name(s["shard"]) for s in mine], "pages": sum(s["count"] for s in mine),
                         "chapters": [c["tag"] for c in plan["chapters"] if c["split"] == split]}
    skipped = plan["skipped"] + [m for s in shard_stats for m in s["skipped"]]
    info = {"format": DATASET_FORMAT, "source": plan["source"], "splits": splits, "chapters": plan["chapters"],
            "skipped": skipped, "seed": config.train.seed, "config_sha256": plan["config_sha256"],
            "refs_per_quadrant": config.train.refs_per_quadrant, "embedder": config.retrieval.backend}
    write_json(out / DATASET_JSON, info)
    return info


def build_training_set(src: str | Path, out: str | Path, config: Config) -> dict:
    """All steps in this process (the flow runs the same steps as Prefect tasks)."""
    plan = plan_training_set(src, out, config)
    stats = []
    for split in SPLITS:
        if plan["shards"][split]:
            build_index(out, split, config)
        stats += [build_shard(out, split, i, config) for i in range(len(plan["shards"][split]))]
    return finish_training_set(out, config, stats)
