"""ColorFlow (ICP + GSRP) on stock diffusers: the `diffusion` colorizer backend.

Modules are imported explicitly (`from chromaflow.models.colorflow.pipeline import ...`);
this package imports nothing itself, so selecting another backend never loads torch.
See docs/diffusion.md.
"""
