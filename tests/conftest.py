"""Shared fixtures: one Prefect test harness and one local Ray cluster per session
(each costs seconds to start), and synthetic data folders."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

TESTS_DIR = Path(__file__).parent
sys.path.insert(0, str(TESTS_DIR))  # tests/synthetic.py
# Ray workers and CLI subprocesses import the test colorizer plugins (faulty_backend.py)
# from here; workers inherit the environment of the ray.init() that starts them.
os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(TESTS_DIR), os.environ.get("PYTHONPATH")]))

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")

from synthetic import make_chapter, make_refs  # noqa: E402


@pytest.fixture(scope="session")
def prefect_harness(tmp_path_factory):
    """A real Prefect API (temporary SQLite) for the whole session. Yields its URL, which
    subprocesses (the CLI under test) receive as PREFECT_API_URL."""
    from prefect.settings import PREFECT_API_URL, PREFECT_RESULTS_LOCAL_STORAGE_PATH, temporary_settings
    from prefect.testing.utilities import prefect_test_harness

    results = tmp_path_factory.mktemp("prefect-results")
    with temporary_settings({PREFECT_RESULTS_LOCAL_STORAGE_PATH: str(results)}):
        with prefect_test_harness(server_startup_timeout=180):
            yield PREFECT_API_URL.value()


@pytest.fixture(scope="session")
def ray_cluster():
    """A real local Ray cluster. Logical CPUs exceed the 2 physical cores on purpose:
    the actor pool plus driver-side work must never starve each other (deadlock)."""
    import ray

    if not ray.is_initialized():
        ray.init(num_cpus=4, include_dashboard=False, logging_level="WARNING")
    yield ray
    ray.shutdown()


@pytest.fixture
def refs_dir(tmp_path) -> Path:
    return make_refs(tmp_path / "refs")


@pytest.fixture
def chapter_dir(tmp_path) -> Path:
    return make_chapter(tmp_path / "chapter", num_pages=5)

