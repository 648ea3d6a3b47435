"""lines: each page's line art at the colorize work size (models/lines.py), and what kind
of page it is (line art, gray, tone, color), for the stages after it. A tone page also
keeps its descreened gray (`tone.png`, its screens in the JSON): the colorize stage hands
crops of it to the colorizer instead of descreening every panel and character crop again.
An episode frame that holds the drawing before it in place takes that drawing's line art
(stages/held.py)."""

from __future__ import annotations

import json

from chromaflow.conf import Config
from chromaflow.models.descreen import PageTone
from chromaflow.models.lines import LineArt, extract_lines
from chromaflow.storage.images import decode_png, encode_png, resize_longest
from chromaflow.storage.job import JobDir
from chromaflow.storage.shards import Sample, json_bytes

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
                output = lines_sample(extract_lines(page, config.lines))
                held.remember(key, inputs, output)
            outputs.append(output)
        return outputs

    return run_shard(job, "lines", shard, config, process_batch)


def lines_sample(art: LineArt) -> Sample:
    meta: dict = {"kind": art.kind}
    sample = {"png": encode_png(art.lines)}
    if art.tone is not None:
        meta.update(screens=art.tone.screens, texture_share=art.tone.texture_share)
        sample["tone.png"] = encode_png(art.tone.gray)
    sample["json"] = json_bytes(meta)
    return sample


def read_tone(sample: Sample) -> PageTone | None:
    """The tone page's descreened gray of a lines sample (None: not a tone page, or a
    shard written before it was kept)."""
    if "tone.png" not in sample:
        return None
    meta = json.loads(sample["json"])
    return PageTone(decode_png(sample["tone.png"], gray=True), meta["screens"], meta["texture_share"])
