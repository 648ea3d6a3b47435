"""Image models: line extraction, colorizers (weight-free and learned), upscaling."""
