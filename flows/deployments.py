"""Deployments served by `chromaflow serve`, so that

    prefect deployment run colorize-episode/default --param source=ep01.mp4 --param refs=refs/

works against a Prefect server (`prefect server start --host 127.0.0.1`). The same
deployments are declared in prefect.yaml for work-pool based setups.
"""

from __future__ import annotations

from prefect import serve

from chromaflow.flows.build_index import build_reference_index
from chromaflow.flows.colorize import colorize_chapter, colorize_episode, rerun_failed_shards
from chromaflow.flows.evaluate import evaluate_flow
from chromaflow.flows.train import build_training_set, train_colorizer, train_guided_sr

DEPLOYMENT_NAME = "default"


def deployments() -> list:
    flows = [colorize_chapter, colorize_episode, rerun_failed_shards, build_reference_index, evaluate_flow,
             build_training_set, train_colorizer, train_guided_sr]
    return [f.to_deployment(name=DEPLOYMENT_NAME, tags=["chromaflow"]) for f in flows]


def serve_deployments(limit: int = 1) -> None:
    serve(*deployments(), limit=limit)
