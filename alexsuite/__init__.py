"""alexsuite: AlexNet training, fc7 image search and R-CNN detection."""

from .version import __version__

__all__ = ["__version__"]
