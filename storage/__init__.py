"""Job storage: sources, WebDataset shards, stats, manifest."""
