"""Prefect task around `ReferenceStore.build` (the plain function does the work)."""

from __future__ import annotations

from prefect import task

from chromaflow.config import Config


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
    from chromaflow.retrieval.store import ReferenceStore

    store = ReferenceStore.build(refs, out, Config.model_validate(config_json))
    return index_summary(store)
