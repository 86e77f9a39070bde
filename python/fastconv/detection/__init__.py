"""Object detection: evaluation of detections (mean average precision)."""

from .metrics import mean_average_precision

__all__ = [
    "mean_average_precision",
]
