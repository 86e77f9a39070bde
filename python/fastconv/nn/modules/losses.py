"""Loss layers: the triplet losses of fastconv.face and binary cross-entropy on logits.

Each holds its settings and calls the function of the same name; settings are checked when
the layer is built, so a bad margin fails where it is written, not at the first batch."""

from __future__ import annotations

from typing import Any, Optional

from ...face import REDUCTIONS, batch_triplet_loss, triplet_loss
from ...ops.metric import check_margin, check_mining
from ...tensor import Tensor
from .. import functional as F
from .module import Module


def _reduction(op: str, reduction: Any) -> str:
    if reduction not in REDUCTIONS:
        raise ValueError(f"{op}: reduction must be one of {', '.join(map(repr, REDUCTIONS))}, "
                         f"got {reduction!r}")
    return reduction


class TripletLoss(Module):
    """max(d(A, P) - d(A, N) + margin, 0) per row of (anchor, positive, negative), each
    (..., D); see fastconv.face.triplet_loss. squared=True is the course's ||.||^2,
    squared=False torch's TripletMarginLoss (p=2) without its eps."""

    def __init__(self, margin: float = 0.2, squared: bool = True,
                 reduction: str = "mean") -> None:
        super().__init__()
        self.margin = check_margin("TripletLoss", margin)
        self.squared = bool(squared)
        self.reduction = _reduction("TripletLoss", reduction)

    def forward(self, anchor: Any, positive: Any, negative: Any) -> Tensor:
        return triplet_loss(anchor, positive, negative, self.margin, squared=self.squared,
                            reduction=self.reduction)

    def extra_repr(self) -> str:
        return f"margin={self.margin}, squared={self.squared}, reduction={self.reduction!r}"


class BatchTripletLoss(Module):
    """The triplet loss mined online from a batch of labelled embeddings (N, D), labels
    (N,); mining "all", "hard" or "semihard" (see fastconv.face.batch_triplet_loss)."""

    def __init__(self, margin: float = 0.2, mining: str = "all",
                 squared: bool = True) -> None:
        super().__init__()
        self.margin = check_margin("BatchTripletLoss", margin)
        self.mining = check_mining("BatchTripletLoss", mining)
        self.squared = bool(squared)

    def forward(self, embeddings: Any, labels: Any) -> Tensor:
        return batch_triplet_loss(embeddings, labels, self.margin, mining=self.mining,
                                  squared=self.squared)

    def extra_repr(self) -> str:
        return f"margin={self.margin}, mining={self.mining!r}, squared={self.squared}"


class BCEWithLogitsLoss(Module):
    """torch.nn.BCEWithLogitsLoss: F.binary_cross_entropy_with_logits(input, target) with
    a fixed per-element `weight` and per-class `pos_weight` (constants, or None)."""

    def __init__(self, weight: Optional[Any] = None, reduction: str = "mean",
                 pos_weight: Optional[Any] = None) -> None:
        super().__init__()
        self.reduction = _reduction("BCEWithLogitsLoss", reduction)
        self.weight = weight
        self.pos_weight = pos_weight

    def forward(self, input: Any, target: Any) -> Tensor:
        return F.binary_cross_entropy_with_logits(input, target, self.weight,
                                                  reduction=self.reduction,
                                                  pos_weight=self.pos_weight)

    def extra_repr(self) -> str:
        return f"reduction={self.reduction!r}"
