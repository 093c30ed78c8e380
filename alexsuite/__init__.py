"""alexsuite: AlexNet training, fc7 image search and R-CNN detection."""

__version__ = "0.1.0"
