"""What a colorize run shows in the Prefect UI besides its logs: artifacts keyed by the job
(`<job name>-<job id>-<what>`, so every run of one job adds a version to the same keys and two
chapters that share a folder name never mix):

    ...-progress       shard stages done (updated as each task finishes; flows/shard_stages.py)
    ...-problems       one row per bad page or failed shard: stage, file, reason ("none" when clean)
    ...-shards         per-shard status of every stage
    ...-identities     identities and references per page
    ...-before-after   every page as an original | colorized thumbnail pair (an evenly spaced
                       selection of `prefect.artifact_pages` for longer jobs)
    ...-report         where report.html is: a path to copy, and its file:// link
"""

from __future__ import annotations

from pathlib import Path

from prefect.artifacts import create_markdown_artifact, create_table_artifact

from chromaflow.flows.summary import JobSummary
from chromaflow.stages.report import before_after_uris
from chromaflow.storage.job import JobDir

THUMB_HEIGHT = 160  # px, both halves of a before/after pair


def publish_artifacts(job: JobDir, summary: JobSummary, max_pages: int) -> None:
    create_table_artifact(summary.problem_rows() or [{"stage": "", "item": "", "problem": "none"}],
                          key=summary.artifact_key("problems"),
                          description=f"{job.name}: {len(summary.problem_rows())} problem(s)")
    create_table_artifact(_shard_table(summary.manifest), key=summary.artifact_key("shards"),
                          description=f"{job.name}: per-shard status")
    if summary.pages:
        create_table_artifact([{"page": p["index"] + 1, "source": p["source"],
                                "identities": ", ".join(i or "(unnamed pool)" for i in p["identities"]) or "unknown",
                                "references": ", ".join(p["references"])} for p in summary.pages],
                              key=summary.artifact_key("identities"), description=f"{job.name}: identities per page")
        create_markdown_artifact(_before_after(job, summary, max_pages), key=summary.artifact_key("before-after"),
                                 description=f"{job.name}: before / after")
    if summary.report:
        report = Path(summary.report)
        create_markdown_artifact(f"### {job.name}: report\n\nOn the host that ran the job:\n\n"
                                 f"```\n{report}\n```\n\n[{report.name}]({report.as_uri()})\n",
                                 key=summary.artifact_key("report"), description=f"{job.name}: report.html")


def _shard_table(rows: list[dict]) -> list[dict]:
    table = []
    for shard in sorted({r["shard"] for r in rows}):
        entry = {"shard": f"{shard:06d}"}
        entry.update({r["stage"]: r["status"] for r in rows if r["shard"] == shard})
        table.append(entry)
    return table


def selected_pages(pages: list[dict], max_pages: int) -> list[dict]:
    """Every page, or `max_pages` evenly spaced ones (first and last included)."""
    if len(pages) <= max_pages:
        return pages
    if max_pages == 1:
        return pages[:1]
    step = (len(pages) - 1) / (max_pages - 1)
    return [pages[round(i * step)] for i in range(max_pages)]


def _before_after(job: JobDir, summary: JobSummary, max_pages: int) -> str:
    # Image artifacts need a public URL; the job's pages are local, so the pairs travel
    # inside the markdown as small JPEG data URIs.
    pages = selected_pages(summary.pages, max_pages)
    which = ("every page" if len(pages) == len(summary.pages)
             else f"{len(pages)} of {len(summary.pages)} pages, evenly spaced; all of them are in report.html")
    lines = [f"### {job.name}: before / after ({which})", ""]
    pairs = before_after_uris(job, pages, height=THUMB_HEIGHT)
    for page in pages:
        pair = pairs.get(page["key"])
        lines += [f"**{page['index'] + 1}. {page['source']}** · {', '.join(page['identities']) or 'unknown'}", ""]
        lines += [f"![{page['source']}]({pair})", ""] if pair else []
    if summary.report:
        lines += [f"Full contact sheet: `{summary.report}`"]
    return "\n".join(lines)
