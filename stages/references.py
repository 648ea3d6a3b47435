"""references: the job's reference store (OUT/references/), built from the refs folder
(retrieval/build.py); incremental, so a rerun embeds only new or changed references."""

from __future__ import annotations

from chromaflow.conf import Config
from chromaflow.retrieval.build import build_store
from chromaflow.storage.job import JobDir


def run(job: JobDir, refs: str, config: Config) -> str:
    """Build or update the store; returns its fingerprint."""
    return build_store(refs, job.references, config).fingerprint
