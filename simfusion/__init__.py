"""image-similarity-fusion: find similar images by fusing the features of several networks."""

__version__ = "0.1.0"
