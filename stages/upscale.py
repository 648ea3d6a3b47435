"""upscale: each colorized page back to its original size, its chroma guided by the
full-resolution page (models/upscale.py)."""

from __future__ import annotations

import json

from chromaflow.conf import Config
from chromaflow.models.upscale import LIGHTNESS_BY_KIND, guided_upsample
from chromaflow.storage.images import decode_png, encode_png
from chromaflow.storage.job import JobDir
from chromaflow.storage.shards import json_bytes

from .runner import ShardStats, run_shard


def run(job: JobDir, shard: int, config: Config) -> ShardStats:
    def process_batch(items: list[tuple[str, dict]]) -> list[dict]:
        outputs = []
        for _, inputs in items:
            page = decode_png(inputs["ingest"]["png"])
            color = decode_png(inputs["colorize"]["png"])
            meta = {**json.loads(inputs["ingest"]["json"]), **json.loads(inputs["colorize"]["json"])}
            final = guided_upsample(color, page, config.upscale, LIGHTNESS_BY_KIND[meta["kind"]])
            outputs.append({"png": encode_png(final), "json": json_bytes(meta)})
        return outputs

    return run_shard(job, "upscale", shard, config, process_batch)
