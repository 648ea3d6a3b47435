"""Deployments served by `chromaflow serve`, so that

    prefect deployment run colorize-episode/default --param source=ep01.mp4 --param refs=refs/

works against a Prefect server (`prefect server start --host 127.0.0.1`), and
`chromaflow serve --inbox INBOX --refs REFS --out-root OUT_ROOT --cron '0 * * * *'` runs
`colorize-inbox/default` on that schedule. The same deployments are declared in prefect.yaml
for work-pool based setups.

Serving again must not lose what the server holds: a deployment's schedules and default
parameters on the server (made by an earlier `serve --cron/--interval`, by
`prefect deployment schedule create`, or in the UI) are read back and kept, and only what
this call's flags say changes: the inbox schedule has its own slug, `chromaflow-serve`, and
is replaced by a new --cron/--interval. (Prefect's serve would otherwise replace the
server's schedules by the ones passed to it: none.) Stopping serve pauses the deployments
(Prefect's default); serving again resumes them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from prefect import serve
from prefect.client.orchestration import get_client
from prefect.client.schemas.actions import DeploymentScheduleCreate
from prefect.client.schemas.objects import ConcurrencyLimitConfig, ConcurrencyLimitStrategy
from prefect.exceptions import ObjectNotFound
from prefect.schedules import Cron, Interval

from chromaflow.flows.build_index import build_reference_index
from chromaflow.flows.colorize import colorize_chapter, colorize_episode, rerun_failed_shards
from chromaflow.flows.evaluate import evaluate_flow
from chromaflow.flows.train import build_training_set, train_colorizer, train_guided_sr
from chromaflow.flows.inbox import colorize_inbox

DEPLOYMENT_NAME = "default"
INBOX_SCHEDULE_SLUG = "chromaflow-serve"
FLOWS = [colorize_chapter, colorize_episode, colorize_inbox, rerun_failed_shards, build_reference_index,
         evaluate_flow, build_training_set, train_colorizer, train_guided_sr]


@dataclass
class InboxSchedule:
    """What `chromaflow serve --inbox ...` passes: the inbox run's parameters and when it runs."""

    inbox: Path
    refs: Path
    out_root: Path
    cron: str | None = None
    interval: float | None = None
    timezone: str | None = None  # of the cron expression (UTC when None)
    config_path: Path | None = None
    overrides: list[str] = field(default_factory=list)

    def parameters(self) -> dict:
        return {"inbox": str(self.inbox.resolve()), "refs": str(self.refs.resolve()),
                "out_root": str(self.out_root.resolve()),
                "config_path": str(self.config_path.resolve()) if self.config_path else None,
                "overrides": list(self.overrides)}

    def schedule(self):
        """The Prefect schedule (parameters ride on it, so they survive a plain `serve`)."""
        if self.cron:
            return Cron(self.cron, timezone=self.timezone, parameters=self.parameters(), slug=INBOX_SCHEDULE_SLUG)
        if self.interval:
            return Interval(self.interval, parameters=self.parameters(), slug=INBOX_SCHEDULE_SLUG)
        return None


def inbox_schedule(inbox: Path | None, refs: Path | None, out_root: Path | None, cron: str | None,
                    interval: float | None, timezone: str | None, config: Path | None, set_: list[str]):
    """The --inbox/--cron/--interval flags, checked (one-line errors), as an InboxSchedule or None."""
    from prefect.client.schemas.schedules import CronSchedule
    from prefect.settings import PREFECT_API_URL

    from chromaflow.conf import ConfigError, load_config
    from chromaflow.retrieval.references import scan_reference_folder

    if inbox is None:
        if refs or out_root or cron or interval is not None or timezone or config or set_:
            raise ConfigError("--refs, --out-root, --cron, --interval, --timezone, --config and --set go with --inbox")
        return None
    if refs is None or out_root is None:
        raise ConfigError("--inbox needs --refs and --out-root")
    if cron and interval is not None:
        raise ConfigError("give --cron or --interval, not both")
    if interval is not None and interval <= 0:
        raise ConfigError(f"--interval {interval:g}: must be a positive number of seconds")
    if timezone and not cron:
        raise ConfigError("--timezone goes with --cron")
    if cron:
        try:
            CronSchedule(cron=cron, timezone=timezone)
        except ValueError:
            raise ConfigError(f"--cron {cron!r} --timezone {timezone!r}: not a cron expression (e.g. '0 * * * *') "
                              "or not an IANA time zone (e.g. Asia/Tokyo)" if timezone else
                              f"--cron {cron!r}: not a cron expression (e.g. '0 * * * *')") from None
    if (cron or interval) and not PREFECT_API_URL.value():
        raise ConfigError("schedules need a Prefect server: run `prefect server start --host 127.0.0.1` and "
                          "export PREFECT_API_URL=http://127.0.0.1:4200/api")
    if not inbox.is_dir():
        raise ConfigError(f"{inbox}: inbox folder does not exist")
    if out_root.exists() and not out_root.is_dir():
        raise ConfigError(f"{out_root}: --out-root is a file, not a folder")
    scan_reference_folder(refs)
    load_config(config, set_)
    return InboxSchedule(inbox, refs, out_root, cron, interval, timezone, config, list(set_))


def _on_server(full_name: str):
    """The deployment as the server holds it, or None."""
    with get_client(sync_client=True) as client:
        try:
            return client.read_deployment_by_name(full_name)
        except ObjectNotFound:
            return None


def _kept_schedules(existing, drop_slug: str | None = None) -> list[DeploymentScheduleCreate]:
    return [DeploymentScheduleCreate(schedule=s.schedule, active=s.active, max_scheduled_runs=s.max_scheduled_runs,
                                     parameters=s.parameters, slug=s.slug)
            for s in (existing.schedules if existing else []) if drop_slug is None or s.slug != drop_slug]


def deployments(inbox: InboxSchedule | None = None) -> list:
    result = []
    for flow_obj in FLOWS:
        existing = _on_server(f"{flow_obj.name}/{DEPLOYMENT_NAME}")
        schedules = _kept_schedules(existing)
        parameters = dict(existing.parameters) if existing else {}
        options = {}
        if flow_obj is colorize_inbox:
            # One inbox run at a time: a tick that comes while one runs is cancelled.
            options["concurrency_limit"] = ConcurrencyLimitConfig(
                limit=1, collision_strategy=ConcurrencyLimitStrategy.CANCEL_NEW)
            if inbox is not None:
                parameters = inbox.parameters()
                if inbox.schedule() is not None:
                    schedules = _kept_schedules(existing, drop_slug=INBOX_SCHEDULE_SLUG) + [inbox.schedule()]
        summary = (flow_obj.description or "").split("\n\n")[0].strip() or None  # the docstring's Args: the form
        result.append(flow_obj.to_deployment(name=DEPLOYMENT_NAME, tags=["chromaflow"], description=summary,
                                             parameters=parameters, schedules=schedules, **options))
    return result


def serve_deployments(limit: int = 1, inbox: InboxSchedule | None = None) -> None:
    serve(*deployments(inbox), limit=limit)
