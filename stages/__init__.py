"""The colorize DAG's stages, one file each, as plain functions over a job folder
(no Prefect, no Ray): registry.py is the stage table, runner.py runs a shard stage over
one shard, pool.py runs them on Ray actors. docs/architecture.md maps them."""
