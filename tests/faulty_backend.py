"""Colorizer plugins for fault tests, loaded by import path (`--set colorize.backend=
faulty_backend:SlowColorizer`) in Ray workers and CLI subprocesses; tests put this folder
on PYTHONPATH. They wrap the real default colorizer, so outputs are real."""

from __future__ import annotations

import os
import time

from chromaflow.models.colorizers.region import RegionColorizer


class SlowColorizer(RegionColorizer):
    """The default colorizer, slowed down so a test can kill a run mid-colorize."""

    def colorize(self, request):
        time.sleep(float(os.environ.get("CHROMAFLOW_TEST_DELAY", "0.4")))
        return super().colorize(request)


class CrashOnPage(RegionColorizer):
    """Kills its worker process on one page, every time: a shard that keeps crashing."""

    def colorize(self, request):
        # Any request of the page: its panels ("-panelN") and characters ("-instanceN") too.
        if request.key.split("-", 1)[0] == os.environ.get("CHROMAFLOW_TEST_CRASH_KEY", "p000002"):
            os._exit(3)
        return super().colorize(request)


class FailOnPage(RegionColorizer):
    """Raises on one page: a page the colorizer cannot handle (the shard carries on)."""

    def colorize(self, request):
        # Any request of the page, as CrashOnPage: with instances a page's requests are its
        # characters ("-instanceN") and what they leave of its panels.
        if request.key.split("-", 1)[0] == os.environ.get("CHROMAFLOW_TEST_FAIL_KEY", "p000001"):
            raise ValueError("cannot color this page")
        return super().colorize(request)
