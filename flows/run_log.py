"""chromaflow's own log records (a bad page named by ingest, a crashed actor retried by the
pool) in the run's log in the Prefect UI, not only in the console of the process that ran it.

Prefect sends the records of the loggers named in PREFECT_LOGGING_EXTRA_LOGGERS to its API,
but it reads that setting once, when it sets up logging at `import prefect`; a flow run that
`chromaflow serve` or a worker starts imports Prefect before chromaflow, so the setting
cannot be added from here in time. Every chromaflow flow therefore calls
`forward_chromaflow_logs()` first: it gives the `chromaflow` logger Prefect's API handler
(once per process), filtered to records made inside a flow or task run, so stage code called
outside Prefect (benchmarks, tests) logs to the console only, without Prefect's
"no flow run id" warnings.

It also keeps tracebacks out of the run's log where nothing crashed: a flow run that a
runner (`chromaflow serve`) or worker starts and that ends Failed makes Prefect's engine
log "Engine execution exited with unexpected exception" with the traceback of the state's
exception, even when the flow returned that state. For chromaflow's expected outcomes
(pages or shards failed: JobIncomplete; unusable inputs) that record is dropped: the run's
log already ends with "Finished in state Failed('<one-line summary>')".
"""

from __future__ import annotations

import logging

from prefect.context import FlowRunContext, TaskRunContext
from prefect.logging.handlers import APILogHandler

from chromaflow.flows.summary import INPUT_ERRORS, JobIncomplete

CHROMAFLOW_LOGGER = "chromaflow"
ENGINE_EXIT = "Engine execution exited with unexpected exception"


def _inside_a_run(record: logging.LogRecord) -> bool:
    return FlowRunContext.get() is not None or TaskRunContext.get() is not None


class RunLogHandler(APILogHandler):
    """Prefect's API log handler, for records made inside a flow or task run."""

    def __init__(self) -> None:
        super().__init__()
        self.addFilter(_inside_a_run)


def _not_an_expected_failure(record: logging.LogRecord) -> bool:
    if not record.exc_info or record.getMessage() != ENGINE_EXIT:
        return True
    return not isinstance(record.exc_info[1], (JobIncomplete, *INPUT_ERRORS))


def forward_chromaflow_logs() -> None:
    target = logging.getLogger(CHROMAFLOW_LOGGER)
    if not any(isinstance(h, RunLogHandler) for h in target.handlers):
        target.addHandler(RunLogHandler())
    flow_runs = logging.getLogger("prefect.flow_runs")
    if _not_an_expected_failure not in flow_runs.filters:
        flow_runs.addFilter(_not_an_expected_failure)
