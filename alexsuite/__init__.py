"""alexsuite: AlexNet training, fc7 image search and R-CNN detection.

    import alexsuite
    model = alexsuite.Model("runs/demo/train")
    model.predict(["photo.jpg"], k=5)          # [Prediction(image, labels, probs)]
    alexsuite.Index("runs/demo/index").search("photo.jpg", k=10)
    alexsuite.Detector("runs/demo/detector").detect("photo.jpg")

The classes load torch on first use, so `import alexsuite` and `alexsuite --version` stay instant.
"""

from .version import __version__

_API = ("Detector", "Hit", "ImageDetections", "ImageInput", "Index", "Model", "Prediction", "SearchResult")
__all__ = ["__version__", *_API]


def __getattr__(name: str):
    if name in _API:
        from . import api

        return getattr(api, name)
    raise AttributeError(f"module 'alexsuite' has no attribute {name!r}")


def __dir__():
    return sorted(__all__)
