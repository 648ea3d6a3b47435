"""What a colorize run reports back: counts, failures, outputs."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field


class JobIncomplete(RuntimeError):
    """The job finished what it could, but pages or shards failed (message: the summary)."""


@dataclass
class JobSummary:
    job_root: str
    name: str
    kind: str
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

    def add_shard_result(self, result: dict) -> None:
        if result["status"] == "cached":
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
        problems = self.problem_lines()
        if problems:
            head += f"; {len(problems)} problem(s):\n  " + "\n  ".join(problems)
        return head

    def raise_if_incomplete(self) -> None:
        if not self.complete:
            raise JobIncomplete(self.text())

    def to_dict(self) -> dict:
        data = asdict(self)
        data.pop("manifest")
        return data
