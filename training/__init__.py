"""Training flows' code: build training shards from a colored archive, fine-tune ColorFlow's
colorizer (ColorGuider + UNet LoRA) and its guided super-resolution (GSRP) on Ray Train.

One concept per module (table in docs/training.md): dataset (shard format), archive
(reading the colored source), screentone, augment, build_set, sampling (deterministic
order/noise), base and random_base (models to train), builders (a run's parts), colorizer,
guided_sr, loop (the per-worker training loop), checkpoint, validation, ray_train, report.
Nothing here is imported by the inference path; torch is imported only by the trainers.
"""
