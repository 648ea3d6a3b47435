"""Deterministic data order and random streams: every draw is a function of (seed, rank,
sample counter or step), never of how long a process has been running. So a run resumed at
step N sees exactly the samples, crops and noise the uninterrupted run saw after step N."""

from __future__ import annotations

import zlib
from pathlib import Path

import numpy as np


def _salt(parts) -> list[int]:
    return [p if isinstance(p, int) else zlib.crc32(str(p).encode()) for p in parts]


def sample_rng(seed: int, rank: int, counter: int, *salt) -> np.random.Generator:
    return np.random.default_rng([seed, rank, counter, *_salt(salt)])


def step_generator(seed: int, rank: int, step: int, micro: int):
    """CPU torch generator for a micro-batch's noise, timesteps and VAE samples."""
    import torch

    return torch.Generator("cpu").manual_seed(int(np.random.SeedSequence([seed, rank, step, micro]).generate_state(1)[0]))


def worker_shards(shards: list[Path], rank: int, world_size: int) -> tuple[list[Path], slice]:
    """Each worker reads its own shards when there are enough; else all shards, every
    world_size-th sample (small sets). Returns (paths to read, which of their samples)."""
    if len(shards) >= world_size:
        return shards[rank::world_size], slice(None)
    return shards, slice(rank, None, world_size)


class SampleOrder:
    """Sample counter -> index: a fresh permutation of this worker's samples every epoch."""

    def __init__(self, indices: list[int], seed: int, rank: int):
        if not indices:
            raise ValueError("this worker has no training samples (is the training set empty?)")
        self.indices, self.seed, self.rank = list(indices), seed, rank
        self._epoch, self._perm = -1, None

    def index(self, counter: int) -> int:
        epoch, position = divmod(int(counter), len(self.indices))
        if epoch != self._epoch:
            self._perm = sample_rng(self.seed, self.rank, epoch, "epoch").permutation(len(self.indices))
            self._epoch = epoch
        return self.indices[int(self._perm[position])]
