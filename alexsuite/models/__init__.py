from .alexnet import FEATURE_LAYERS, AlexNet, count_parameters, create_model

__all__ = ["FEATURE_LAYERS", "AlexNet", "count_parameters", "create_model"]
