"""Reference pools, patch descriptors/embedders, FAISS indexes and retrieval."""
