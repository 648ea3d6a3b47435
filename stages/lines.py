"""lines: each page's line art at the colorize work size (models/lines.py), and what kind
of page it is (line art, gray, color), for the stages after it. An episode frame that
holds the drawing before it in place takes that drawing's line art (stages/held.py)."""

from __future__ import annotations

from chromaflow.conf import Config
from chromaflow.models.lines import extract_lines
from chromaflow.storage.images import decode_png, encode_png, resize_longest
from chromaflow.storage.job import JobDir
from chromaflow.storage.shards import json_bytes

from .held import HeldOutputs
from .runner import ShardStats, run_shard


def run(job: JobDir, shard: int, config: Config) -> ShardStats:
    held = HeldOutputs()

    def process_batch(items: list[tuple[str, dict]]) -> list[dict]:
        outputs = []
        for key, inputs in items:
            output = held.repeat_of(inputs)
            if output is None:
                page = resize_longest(decode_png(inputs["ingest"]["png"]), config.colorize.work_size)
                art = extract_lines(page, config.lines)
                output = {"png": encode_png(art.lines), "json": json_bytes({"kind": art.kind})}
                held.remember(key, inputs, output)
            outputs.append(output)
        return outputs

    return run_shard(job, "lines", shard, config, process_batch)
