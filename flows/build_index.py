"""Flow `build-reference-index`: turn a reference folder into a persistent, incremental
reference index (`chromaflow index REFS --out INDEX_DIR`).

    refs/<identity>/*   ID pools          refs/*   the unnamed pool

Re-running on the same folder embeds only new or changed files (see retrieval/build.py).
"""

from __future__ import annotations

from prefect import flow
from prefect.artifacts import create_table_artifact

from chromaflow.conf import load_config
from chromaflow.tasks.index import build_reference_index_task


@flow(name="build-reference-index")
def build_reference_index(refs: str, out: str, config_path: str | None = None,
                          overrides: list[str] | None = None) -> dict:
    """Build or update a reference index (only new or changed references are embedded).

    Args:
        refs: Reference folder: refs/<identity>/*.png are ID pools, refs/*.png the unnamed pool.
        out: Index folder (created; an existing one is updated).
        config_path: YAML config merged over conf/default.yaml.
        overrides: Config overrides, e.g. ["retrieval.backend=clip"].
    """
    config = load_config(config_path, overrides)
    summary = build_reference_index_task(str(refs), str(out), config.model_dump(mode="json"))
    create_table_artifact(
        key="reference-index",
        table=[{"key": k, "value": ", ".join(map(str, v)) if isinstance(v, list) else str(v)}
               for k, v in summary.items()],
        description=f"Reference index {out}")
    return summary
