"""R-CNN detection on AlexNet features (R-CNN; docs/references.md): settings (config.py), region
framing and warping (framing.py, regions.py), fine-tuning, the feature cache, SVMs and box
regressors (heads.py), Platt scaling of their scores (calibration.py), the trained detector,
running it (inference.py) and scoring it (evaluate.py)."""
