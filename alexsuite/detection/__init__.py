"""R-CNN detection on AlexNet features (Girshick et al. 2014): boxes, region warping, SVMs,
bounding-box regression and NMS."""
