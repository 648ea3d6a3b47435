"""A colorize stage that takes long without using the CPU, like a GPU colorizer seen from
the host: the default region colorizer plus a sleep per page. bench_pipeline.py --overlap
loads it in the Ray actors (`colorize.backend=slow_colorizer:GpuLikeColorizer`; the bench
puts this folder on PYTHONPATH) to show what overlapping the stages buys when colorize is
the bottleneck and the CPU is free for lines/retrieval of the next shards."""

from __future__ import annotations

import os
import time

from chromaflow.models.colorizers.region import RegionColorizer


class GpuLikeColorizer(RegionColorizer):
    def colorize(self, request):
        time.sleep(float(os.environ.get("CHROMAFLOW_BENCH_COLORIZE_DELAY", "0.5")))
        return super().colorize(request)
