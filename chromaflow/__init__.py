"""chromaflow: batch colorization of manga chapters and anime episodes."""

__version__ = "0.1.0"
