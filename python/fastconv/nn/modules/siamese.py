"""Siamese networks: one encoder f applied to both images of a pair (shared parameters by
construction), the L2-normalized embedding head, and the course's logistic verification
unit on the pair's similarity features."""

from __future__ import annotations

import numbers
from typing import Any, Optional

from ...face import FEATURES, similarity_features
from ...tensor import Tensor
from .. import functional as F
from .linear import Linear
from .module import Identity, Module


class Normalize(Module):
    """x / max(||x||_p, eps) along `dim` (F.normalize): the last layer of a FaceNet-style
    embedding head, putting every embedding on the unit sphere so that squared distances
    lie in [0, 4] and a triplet margin has a fixed scale."""

    def __init__(self, p: float = 2.0, dim: int = 1, eps: float = 1e-12) -> None:
        super().__init__()
        self.p, self.dim, self.eps = p, dim, eps

    def forward(self, x: Tensor) -> Tensor:
        return F.normalize(x, self.p, self.dim, self.eps)

    def extra_repr(self) -> str:
        return f"p={self.p}, dim={self.dim}"


class SiameseClassifier(Module):
    """Verification as binary classification (the course's DeepFace form):
    y_hat = sigmoid(sum_k w_k phi_k + b) with phi = |f(a) - f(b)| (kind="abs") or the
    chi-square features (f(a) - f(b))^2 / (f(a) + f(b)) (kind="chi2", for non-negative
    embeddings), see fastconv.face.similarity_features.

    encoder: any module mapping a batch of inputs (N, ...) to embeddings (N, embedding_dim);
    None (nn.Identity) when the inputs are embeddings already. embedding_dim defaults to the
    out_features of the encoder's last Linear layer. Both images of a pair go through this
    one encoder, in one batch (so batch norm sees both), hence one parameter set whose
    gradient is the sum of both branches'. forward(x_a, x_b) returns the logits (N,); train
    with F.binary_cross_entropy_with_logits against 1 (same person) / 0, and read
    probabilities with sigmoid. Parameters: encoder.*, head.weight (1, D), head.bias (1,).
    """

    def __init__(self, encoder: Optional[Module] = None, embedding_dim: Optional[int] = None,
                 kind: str = "abs") -> None:
        super().__init__()
        encoder = Identity() if encoder is None else encoder
        if not isinstance(encoder, Module):
            raise TypeError(f"SiameseClassifier: encoder must be an nn.Module, got "
                            f"{type(encoder).__name__}")
        if embedding_dim is None:
            linears = [m for m in encoder.modules() if isinstance(m, Linear)]
            if not linears:
                raise ValueError("SiameseClassifier: pass embedding_dim (the encoder has no "
                                 "Linear layer to read it from)")
            embedding_dim = linears[-1].out_features
        if isinstance(embedding_dim, bool) or not isinstance(embedding_dim, numbers.Integral) \
                or embedding_dim < 1:
            raise ValueError(f"SiameseClassifier: embedding_dim must be a positive int, got "
                             f"{embedding_dim!r}")
        if kind not in FEATURES:
            raise ValueError(f"SiameseClassifier: kind must be one of "
                             f"{', '.join(map(repr, FEATURES))}, got {kind!r}")
        self.encoder = encoder
        self.kind = kind
        self.head = Linear(int(embedding_dim), 1)

    def embed(self, x: Any) -> Tensor:
        """f(x): the shared encoder's embeddings."""
        return self.encoder(x if isinstance(x, Tensor) else Tensor(x))

    def forward(self, x_a: Any, x_b: Any) -> Tensor:
        a = x_a if isinstance(x_a, Tensor) else Tensor(x_a)
        b = x_b if isinstance(x_b, Tensor) else Tensor(x_b)
        if a.shape != b.shape or a.ndim < 1:
            raise ValueError(f"SiameseClassifier: x_a and x_b must have one shape (N, ...), "
                             f"got {a.shape} and {b.shape}")
        n = a.shape[0]
        both = self.encoder(F.concat([a, b], dim=0))
        if both.ndim != 2:
            raise ValueError(f"SiameseClassifier: the encoder must give (N, embedding_dim) "
                             f"embeddings, got shape {both.shape}")
        features = similarity_features(both[:n], both[n:], self.kind)
        return self.head(features).reshape(n)

    def extra_repr(self) -> str:
        return f"kind={self.kind!r}"

