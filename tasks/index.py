"""Prefect task around `retrieval.build.build_store` (the plain function does the work)."""

from __future__ import annotations

from prefect import task

from chromaflow.conf import Config
from chromaflow.retrieval.build import build_store


def index_summary(store) -> dict:
    """What a build produced, JSON-serializable (flow return value and table artifact)."""
    info = store.info
    return {"index_dir": str(store.root), "fingerprint": store.fingerprint,
            "references": info["num_references"], "patches": info["num_patches"],
            "reused_references": info["reused_references"], "skipped": list(info["skipped"]),
            "identities": [i or "(unnamed)" for i in info["identities"]], "index_kind": info["index_kind"],
            "embedder": info["embedder"]["signature"]}


@task(name="build-reference-index", retries=1, retry_delay_seconds=1)
def build_reference_index_task(refs: str, out: str, config_json: dict) -> dict:
    return index_summary(build_store(refs, out, Config.model_validate(config_json)))
