"""What a colorize run reports back: counts, failures, outputs, and the flow's final state.

A run whose pages or shards failed ends `Failed` with a one-line message (the full list is
in the run's log, the problems artifact and report.html) and no traceback: the flow returns
that state instead of raising. Called from Python, the flow then raises `JobIncomplete`.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field

from prefect.states import Completed, Failed, State

from chromaflow.conf import ConfigError
from chromaflow.models.palette_memory import PaletteMemoryError
from chromaflow.retrieval.references import ReferenceFolderError
from chromaflow.retrieval.store_format import StoreError
from chromaflow.storage.images import ImageError
from chromaflow.storage.sources import SourceError

class OutFolderError(ValueError):
    """The job folder cannot be used (holds another job, or is not a job folder)."""


# Problems with what the user passed (paths, config): a one-line Failed state, no traceback.
INPUT_ERRORS: tuple[type[Exception], ...] = (ConfigError, SourceError, ReferenceFolderError, ImageError, StoreError,
                                             PaletteMemoryError, FileNotFoundError, NotADirectoryError,
                                             OutFolderError)


class JobIncomplete(RuntimeError):
    """The job finished what it could, but pages or shards failed (message: the summary)."""

    def __init__(self, text: str, summary: dict | None = None):
        super().__init__(text)
        self.summary = summary or {}


def input_error_state(exc: Exception) -> State:
    """The final state of a run refused for its inputs: the error's one line."""
    line = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
    return Failed(message=line, data=exc)


@dataclass
class JobSummary:
    job_root: str
    name: str
    kind: str
    job_id: str = ""
    num_items: int = 0
    num_shards: int = 0
    page_failures: list[dict] = field(default_factory=list)  # bad input pages, colorizer errors
    shard_failures: list[dict] = field(default_factory=list)  # (stage, shard) that failed every attempt
    skipped_files: list[str] = field(default_factory=list)
    cached: int = 0  # (shard, stage) pairs reused from an earlier run
    computed: int = 0
    pages: list[dict] = field(default_factory=list)
    outputs: dict = field(default_factory=dict)
    report: str | None = None
    manifest: list[dict] = field(default_factory=list)

    def add_ingest(self, ingested: dict) -> None:
        self.num_items = ingested["num_items"]
        self.num_shards = ingested["num_shards"]
        self.page_failures += [{"stage": "ingest", **f} for f in ingested["failed"]]
        self.skipped_files += ingested["skipped"]

    def artifact_key(self, what: str) -> str:
        """`<job name>-<job id>-<what>`: artifact keys allow only lowercase letters, digits, dashes."""
        name = re.sub(r"[^a-z0-9-]+", "-", self.name.lower()).strip("-") or "job"
        return "-".join(filter(None, [name[:60], self.job_id, what]))[:100]

    def add_shard_result(self, result: dict, reused: bool = False) -> None:
        if reused or result["status"] == "cached":
            self.cached += 1
        else:
            self.computed += 1
        # Reused shards report their failed pages too: those pages are still missing.
        self.page_failures += [{"stage": result["stage"], **f} for f in result.get("failed", [])]

    def add_shard_failure(self, stage: str, shard: int, error: str) -> None:
        self.shard_failures.append({"stage": stage, "shard": shard, "error": error})

    def add_export(self, exported: dict) -> None:
        self.pages = exported["pages"]
        self.outputs = exported["outputs"]
        self.report = exported["report"]
        self.manifest = exported["manifest"]

    def problem_lines(self) -> list[str]:
        lines = [f"page {f.get('name', f.get('key'))}: {f['error']}" if f["stage"] == "ingest"
                 else f"{f['stage']} {f.get('name', f.get('key'))}: {f['error']}" for f in self.page_failures]
        lines += [f"shard {f['shard']:06d} failed at {f['stage']}: {f['error']}" for f in self.shard_failures]
        return lines

    @property
    def complete(self) -> bool:
        return not self.page_failures and not self.shard_failures

    def text(self) -> str:
        head = (f"{self.name}: {len(self.pages)}/{self.num_items} pages written to {self.job_root} "
                f"({self.computed} shard-stages computed, {self.cached} reused)")
        head += f"; {self.reuse_line()}" if self.reuse_line() else ""
        problems = self.problem_lines()
        if problems:
            head += f"; {len(problems)} problem(s):\n  " + "\n  ".join(problems)
        return head

    def reuse_line(self) -> str:
        """Episodes: `reused R of N frames (P %)`, held drawings colored once (stages/export.py)."""
        return self.outputs.get("reuse", "")

    def one_line(self) -> str:
        """The flow run's state message."""
        head = f"{self.name}: {len(self.pages)}/{self.num_items} pages written"
        problems = self.problem_lines()
        if not problems:
            return f"{head} ({self.computed} shard-stages computed, {self.cached} reused)"
        shown = "; ".join(problems[:3]) + ("; ..." if len(problems) > 3 else "")
        line = f"{head}; {len(problems)} problem(s): {shown}"
        return line if len(line) <= 400 else line[:397] + "..."

    def problem_rows(self) -> list[dict]:
        """One row per problem, for the problems table artifact."""
        rows = [{"stage": f["stage"], "item": f.get("name") or f.get("key", ""), "problem": f["error"]}
                for f in self.page_failures]
        rows += [{"stage": f["stage"], "item": f"shard {f['shard']:06d}", "problem": f["error"]}
                 for f in self.shard_failures]
        return rows

    def final_state(self) -> State:
        """Completed with the summary, or Failed with the one-line summary (no traceback)."""
        if self.complete:
            return Completed(message=self.one_line(), data=self.to_dict())
        return Failed(message=self.one_line(), data=JobIncomplete(self.text(), self.to_dict()))

    def to_dict(self) -> dict:
        data = asdict(self)
        data.pop("manifest")
        return data
