"""Object detection as the course teaches it: classification with localization and
landmarks, YOLO (encode, decode, loss, anchors, a small network), a region-based head
(Fast R-CNN style), and the evaluation of detections (mean average precision)."""

from .localization import LandmarkHead, landmark_loss, localization_loss, localization_target
from .metrics import mean_average_precision
from .yolo import (YOLO, kmeans_anchors, shape_iou, yolo_activate, yolo_decode, yolo_encode,
                   yolo_loss)

__all__ = [
    "LandmarkHead",
    "YOLO",
    "kmeans_anchors",
    "landmark_loss",
    "localization_loss",
    "localization_target",
    "mean_average_precision",
    "shape_iou",
    "yolo_activate",
    "yolo_decode",
    "yolo_encode",
    "yolo_loss",
]
