"""The Python API: models, indexes and detectors loaded once and used on many images. Every
command that prints results goes through these classes, so a script and the command line get
the same numbers, the same JSON (`.to_dict()`) and the same errors."""

from ..data.inputs import ImageInput
from ..detection.inference import ImageDetections
from ..retrieval.search import Hit
from ..retrieval.search import QueryResult as SearchResult
from ..training.predict import Prediction
from .detector import Detector
from .index import Index
from .model import Model

__all__ = ["Detector", "Hit", "ImageDetections", "ImageInput", "Index", "Model", "Prediction", "SearchResult"]
