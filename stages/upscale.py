"""upscale: each colorized page back to its original size, its chroma guided by the
full-resolution page (models/upscale.py, in bands of bounded memory). Per page it holds the
decoded page, the output page and one band; the output is encoded in place. An episode frame
that holds the drawing before it in place takes that drawing's result (stages/held.py)."""

from __future__ import annotations

import json

from chromaflow.conf import Config
from chromaflow.models.upscale import LIGHTNESS_BY_KIND, guided_upsample
from chromaflow.storage.images import decode_png, encode_png
from chromaflow.storage.job import JobDir
from chromaflow.storage.shards import json_bytes

from .held import HeldOutputs
from .runner import ShardStats, run_shard


def run(job: JobDir, shard: int, config: Config) -> ShardStats:
    held = HeldOutputs()

    def process_batch(items: list[tuple[str, dict]]) -> list[dict]:
        outputs = []
        for key, inputs in items:
            meta = {**json.loads(inputs["ingest"]["json"]), **json.loads(inputs["colorize"]["json"])}
            image = held.repeat_of(inputs)
            if image is None:
                page = decode_png(inputs["ingest"]["png"])
                color = decode_png(inputs["colorize"]["png"])
                final = guided_upsample(color, page, config.upscale, LIGHTNESS_BY_KIND[meta["kind"]])
                del page, color  # before encoding: the encoder's buffer takes their place
                image = {"png": encode_png(final, consume=True)}
                held.remember(key, inputs, image)
            outputs.append({**image, "json": json_bytes(meta)})
        return outputs

    return run_shard(job, "upscale", shard, config, process_batch)
