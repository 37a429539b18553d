"""facebatch: find the people in a photo library."""

__version__ = "0.1.0"
