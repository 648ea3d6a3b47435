"""Training flows' code: build training shards from a colored archive, fine-tune ColorFlow's
colorizer (ColorGuider + UNet LoRA) and its guided super-resolution (GSRP) on Ray Train.

One concept per module (see docs/training.md): dataset (shard format), archive (reading the
colored source), screentone, augment, build_set, base (models to train), checkpoint,
colorizer, guided_sr, loop (the per-worker training loop), validation, ray_train, report.
Nothing here is imported by the inference path; torch is imported only by the trainers.
"""
