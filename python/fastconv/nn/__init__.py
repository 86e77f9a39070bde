"""fastconv.nn: network building blocks on fastconv.Tensor."""

from . import functional
from . import functional as F

__all__ = ["functional", "F"]
