"""Face verification and recognition (DESIGN.md section 3c): embedding distances, the
triplet loss with batch mining, verification, a gallery for 1:K recognition with "not
recognized", and threshold selection from validation pairs.

An encoder f maps an image to an embedding (a row of D floats); two images show the same
person when d(f(x1), f(x2)) <= tau. d is the squared Euclidean distance by default (the
course's ||f(A) - f(P)||^2) or, with squared=False, the Euclidean distance itself, whose
gradient is taken as 0 where the distance is 0 (the square root has none there; no epsilon
is added to the value, so no NaN and no bias).

Inputs are Tensors (results are Tensors with autograd) or NumPy/CuPy float arrays (results
are arrays of the same kind, float64). Losses always return Tensors. Embeddings are
(N, D); labels are N integers of any values (only equality matters).

`batch_triplet_loss` never materializes the N^3 triplets: it works one block of anchors
at a time (fastconv.ops.metric), in O(N^2) memory at most, and computes the gradient in the
same pass (so a call that needs a gradient costs about two distance passes, one that does
not, one).

Thresholds: `roc_curve`, `roc_auc`, `tar_at_far` and `equal_error_rate` take the distances
of validation pairs and whether each pair is the same person; a pair is accepted when its
distance is <= the threshold, as in `verify` and `Gallery`.
"""

from __future__ import annotations

import math
import numbers
from typing import TYPE_CHECKING, Any, Hashable, List, Optional, Sequence, Tuple, Union

import numpy as np

from ._backend import array_module, float_arrays, is_gpu, matmul
from ._geometry import as_real
from .ops.metric import (MINING, batch_triplet, check_margin, check_mining, cross_squared,
                         pairwise_squared)
from .tensor import Tensor, is_grad_enabled, no_grad

if TYPE_CHECKING:  # the network layer imports this module; no import at run time
    from .nn import Module

__all__ = ["MINING", "FEATURES", "Gallery", "batch_triplet_loss", "embed",
           "equal_error_rate", "labelled_pairs", "paired_distances", "pairwise_distances",
           "roc_auc", "roc_curve", "similarity_features", "tar_at_far", "triplet_loss",
           "verify"]

FEATURES = ("abs", "chi2")
REDUCTIONS = ("mean", "sum", "none")

ArrayOrTensor = Any


# ----------------------------------------------------------------------------- arguments


def _float_inputs(op: str, **values: Any) -> Tuple[List[Tensor], bool]:
    """The named embeddings as Tensors, and whether the caller passed Tensors.

    Arrays and Tensors are checked alike (float32/float64, one dtype, all NumPy or all
    GPU). Called with arrays only, the arrays become float64 constants: the array API
    computes in float64 and hands back the result's `.data`."""
    raw = {name: v.data if isinstance(v, Tensor) else v for name, v in values.items()}
    checked = float_arrays(op, **raw)
    tensors = any(isinstance(v, Tensor) for v in values.values())
    out = []
    for (name, value), array in zip(values.items(), checked):
        if isinstance(value, Tensor):
            out.append(value)
        else:
            out.append(Tensor(array if tensors else array.astype(np.float64, copy=False)))
    return out, tensors


def _result(t: Tensor, tensors: bool) -> ArrayOrTensor:
    return t if tensors else t.data


def _embeddings_2d(op: str, name: str, t: Tensor) -> None:
    if t.ndim != 2:
        raise ValueError(f"{op}: {name} must be (N, D), got shape {t.shape}")


def _same_shape(op: str, names: Sequence[str], values: Sequence[Any]) -> None:
    shapes = [tuple(v.shape) for v in values]
    if any(s != shapes[0] for s in shapes) or not shapes[0]:
        listed = ", ".join(f"{n} {s}" for n, s in zip(names, shapes))
        raise ValueError(f"{op}: {', '.join(names)} must have one shape (..., D) with at "
                         f"least one dim, got {listed}")


def _flag(op: str, name: str, value: Any) -> bool:
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{op}: {name} must be True or False, got {value!r}")
    return bool(value)


def _threshold(op: str, threshold: Any) -> float:
    value = as_real(op, "threshold", threshold)
    if math.isnan(value) or value < 0:
        raise ValueError(f"{op}: threshold must be a distance >= 0 (inf accepts every "
                         f"pair), got {threshold!r}")
    return value


def _choice(op: str, name: str, value: Any, options: Sequence[str]) -> str:
    if not isinstance(value, str) or value not in options:
        raise ValueError(f"{op}: {name} must be one of {', '.join(map(repr, options))}, "
                         f"got {value!r}")
    return value


def _labels(op: str, labels: Any, n: int, like: Any) -> Any:
    """labels as a 1-D integer array of length n on the device of `like`."""
    if isinstance(labels, Tensor):
        labels = labels.data
    if isinstance(labels, (list, tuple)):
        labels = np.asarray(labels)
    if not (isinstance(labels, np.ndarray) or is_gpu(labels)):
        raise TypeError(f"{op}: labels must be an integer array or Tensor, got "
                        f"{type(labels).__name__}")
    if is_gpu(labels) and not is_gpu(like):
        raise TypeError(f"{op}: labels are on the GPU but the embeddings in host memory")
    labels = array_module(like).asarray(labels)
    if labels.dtype == np.bool_ or labels.dtype.kind not in "iu":
        raise TypeError(f"{op}: labels must have an integer dtype, got {labels.dtype}")
    if labels.shape != (n,):
        raise ValueError(f"{op}: labels must have shape ({n},) for embeddings of {n} rows, "
                         f"got shape {labels.shape}")
    return labels


def _finite(op: str, name: str, data: Any) -> None:
    if not bool(array_module(data).isfinite(data).all()):
        raise ValueError(f"{op}: {name} contains NaN or infinite values (shape {data.shape})")


# ----------------------------------------------------------------------------- distances


def _safe_sqrt(t: Tensor) -> Tensor:
    """sqrt with the gradient 0 at 0 (where the derivative is infinite)."""
    xp = array_module(t.data)
    out = xp.sqrt(t.data)

    def backward(g: Any) -> tuple:
        positive = out > 0
        return (xp.where(positive, g / (2 * xp.where(positive, out, 1)), 0).astype(g.dtype),)

    return Tensor._make(out, [t], backward, "sqrt")


def _row_distances(a: Tensor, b: Tensor, squared: bool) -> Tensor:
    diff = a - b
    d2 = (diff * diff).sum(dim=-1)
    return d2 if squared else _safe_sqrt(d2)


def paired_distances(emb_a: ArrayOrTensor, emb_b: ArrayOrTensor, *,
                     squared: bool = True) -> ArrayOrTensor:
    """d(a_i, b_i) row by row for emb_a, emb_b of one shape (..., D) -> (...): the squared
    Euclidean distance, or (squared=False) the distance itself (gradient 0 at 0)."""
    op = "paired_distances"
    (a, b), tensors = _float_inputs(op, emb_a=emb_a, emb_b=emb_b)
    _same_shape(op, ("emb_a", "emb_b"), (a, b))
    return _result(_row_distances(a, b, _flag(op, "squared", squared)), tensors)


def pairwise_distances(embeddings: ArrayOrTensor, squared: bool = True) -> ArrayOrTensor:
    """All distances d(e_i, e_j) of the rows of embeddings (N, D) -> (N, N), symmetric with
    a zero diagonal: squared Euclidean, or (squared=False) Euclidean with gradient 0 at
    zero distance. Computed from the Gram matrix (in the input's dtype for Tensors)."""
    op = "pairwise_distances"
    (e,), tensors = _float_inputs(op, embeddings=embeddings)
    _embeddings_2d(op, "embeddings", e)
    squared = _flag(op, "squared", squared)
    xp = array_module(e.data)
    x = e.data
    d2 = pairwise_squared(x)
    out = d2 if squared else xp.sqrt(d2)

    def backward(g: Any) -> tuple:
        if not squared:
            positive = out > 0
            g = xp.where(positive, g / (2 * xp.where(positive, out, 1)), 0)
        # d(x_i - x_j)^2 reaches x_i through row i and column i of g.
        s = (g + g.T).astype(x.dtype, copy=False)
        return (2 * (s.sum(axis=1)[:, None] * x - matmul(s, x)),)

    return _result(Tensor._make(out, [e], backward, "pairwise_distances"), tensors)


# ----------------------------------------------------------------------------- losses


def triplet_loss(anchor: ArrayOrTensor, positive: ArrayOrTensor, negative: ArrayOrTensor,
                 margin: float = 0.2, *, squared: bool = True,
                 reduction: str = "mean") -> Tensor:
    """The course's triplet loss max(d(A, P) - d(A, N) + margin, 0) per row.

    anchor, positive, negative: (..., D) of one shape (rows of f(A), f(P), f(N)). d is
    ||.||^2 (squared=True, the seed's formula) or the exact Euclidean distance
    (squared=False, torch's TripletMarginLoss without its eps; gradient 0 at zero
    distance). margin (alpha) >= 0. reduction "none" gives the (...) per-row losses, "sum"
    their sum, "mean" their mean (0 for no rows).
    """
    op = "triplet_loss"
    (a, p, n), _ = _float_inputs(op, anchor=anchor, positive=positive, negative=negative)
    _same_shape(op, ("anchor", "positive", "negative"), (a, p, n))
    margin = check_margin(op, margin)
    squared = _flag(op, "squared", squared)
    reduction = _choice(op, "reduction", reduction, REDUCTIONS)
    loss = (_row_distances(a, p, squared) - _row_distances(a, n, squared) + margin).relu()
    if reduction == "none":
        return loss
    if reduction == "sum" or loss.data.size == 0:
        return loss.sum()
    return loss.mean()


def batch_triplet_loss(embeddings: ArrayOrTensor, labels: Any, margin: float = 0.2, *,
                       mining: str = "all", squared: bool = True) -> Tensor:
    """Triplet loss over the triplets a batch of labelled embeddings (N, D) holds, mined
    online (FaceNet). A triplet (a, p, n) has labels[p] == labels[a] != labels[n], p != a;
    its loss is max(d(a, p) - d(a, n) + margin, 0).

    mining:
      "all": the mean over every triplet whose loss is positive.
      "hard": per anchor the farthest positive and the closest negative (the lowest index
        among ties), the mean over the anchors that have a positive and a negative
        (zero losses included).
      "semihard": per (anchor, positive) pair the closest negative farther than the
        positive (d(a, n) > d(a, p)), or the farthest negative if none is; the mean over
        the pairs whose loss is positive.
    Anchors without a positive or without a negative are skipped. A batch with no term to
    average (one class only, every class a single sample, no positive loss, N = 0) gives a
    loss of 0 with a zero gradient: a defined result, not an error.

    Memory O(N^2) at most (blocks of anchors; the triplets are never listed). Embeddings
    must be finite. Returns a 0-d Tensor of the embeddings' dtype.
    """
    op = "batch_triplet_loss"
    (e,), _ = _float_inputs(op, embeddings=embeddings)
    _embeddings_2d(op, "embeddings", e)
    labels = _labels(op, labels, e.shape[0], e.data)
    margin = check_margin(op, margin)
    mining = check_mining(op, mining)
    squared = _flag(op, "squared", squared)
    _finite(op, "embeddings", e.data)
    need_grad = is_grad_enabled() and e.requires_grad
    loss, grad, _ = batch_triplet(e.data, labels, margin, mining, squared, need_grad)
    xp = array_module(e.data)
    out = xp.asarray(loss, dtype=e.dtype)
    return Tensor._make(out, [e], lambda g: (grad * g,), "batch_triplet_loss")


# ----------------------------------------------------------------------------- features


def similarity_features(emb_a: ArrayOrTensor, emb_b: ArrayOrTensor,
                        kind: str = "abs") -> ArrayOrTensor:
    """The features the course's logistic unit reads for a pair, elementwise (..., D):
    kind "abs": |f(a) - f(b)|; "chi2": (f(a) - f(b))^2 / (f(a) + f(b)), taken as 0 where
    f(a) + f(b) = 0. The chi-square form is meant for non-negative embeddings (after a
    ReLU), where it is bounded by |f(a) - f(b)| and its gradient by 3; signed embeddings
    make it blow up near f(a) = -f(b).
    """
    op = "similarity_features"
    (a, b), tensors = _float_inputs(op, emb_a=emb_a, emb_b=emb_b)
    _same_shape(op, ("emb_a", "emb_b"), (a, b))
    kind = _choice(op, "kind", kind, FEATURES)
    if kind == "abs":
        return _result((a - b).abs(), tensors)
    xp = array_module(a.data)
    total = a.data + b.data
    nonzero = total != 0
    # r = (a - b) / (a + b): value (a - b) r, d/da = 2r - r^2, d/db = -2r - r^2.
    r = xp.where(nonzero, (a.data - b.data) / xp.where(nonzero, total, 1), 0)
    out = (a.data - b.data) * r

    def backward(g: Any) -> tuple:
        return g * (2 * r - r * r), g * (-2 * r - r * r)

    return _result(Tensor._make(out, [a, b], backward, "chi2"), tensors)


# ----------------------------------------------------------------------------- verification


def _plain(op: str, **values: Any) -> List[Any]:
    """Embeddings given as Tensors or arrays, as float64 arrays (no graph)."""
    tensors, _ = _float_inputs(op, **values)
    return [t.data.astype(np.float64, copy=False) for t in tensors]


def verify(emb_a: ArrayOrTensor, emb_b: ArrayOrTensor, threshold: float, *,
           squared: bool = True) -> Any:
    """Verification: is b the person a claims to be? d(a_i, b_i) <= threshold row by row,
    for emb_a, emb_b of one shape (..., D) -> bool array (...) (NumPy, or CuPy for CuPy
    input). threshold is in the units of d (squared or not)."""
    op = "verify"
    a, b = _plain(op, emb_a=emb_a, emb_b=emb_b)
    threshold = _threshold(op, threshold)
    squared = _flag(op, "squared", squared)
    _same_shape(op, ("emb_a", "emb_b"), (a, b))
    with no_grad():
        d = _row_distances(Tensor(a), Tensor(b), squared).data
    return d <= threshold


def embed(encoder: "Module", images: ArrayOrTensor, *, batch_size: int = 256) -> Any:
    """f(images): the encoder run over images (N, ...) in batches, in eval mode (its
    previous mode is restored) without a graph -> embeddings array (N, D)."""
    if not callable(encoder):
        raise TypeError(f"embed: encoder must be a module, got {type(encoder).__name__}")
    if isinstance(batch_size, bool) or not isinstance(batch_size, numbers.Integral) \
            or batch_size < 1:
        raise ValueError(f"embed: batch_size must be a positive int, got {batch_size!r}")
    data = images.data if isinstance(images, Tensor) else images
    if not (isinstance(data, np.ndarray) or is_gpu(data)) or data.ndim < 1:
        raise TypeError(f"embed: images must be an array or Tensor (N, ...), got "
                        f"{type(images).__name__}")
    was_training = getattr(encoder, "training", False)
    if was_training:
        encoder.eval()
    try:
        with no_grad():
            parts = [encoder(Tensor(data[i:i + batch_size])).data
                     for i in range(0, len(data), batch_size)]
    finally:
        if was_training:
            encoder.train()
    if not parts:
        raise ValueError(f"embed: images must hold at least one image, got shape "
                         f"{data.shape}")
    return array_module(parts[0]).concatenate(parts)


class Gallery:
    """Face recognition against K enrolled persons, with "not recognized".

    Gallery(threshold, squared=True, *, encoder=None): `add(name, embedding)` enrols one
    embedding (D,) or several (M, D) under a name (any hashable; a name may be enrolled
    again); `identify(embedding)` returns the name of the nearest enrolled embedding when
    its distance is <= threshold, else None; a batch (Q, D) gives a list. `nearest` gives
    the names and distances without the threshold (1:K closed-set recognition).
    With an encoder, `add_images` / `identify_images` embed images first (see `embed`).
    Distances are squared Euclidean unless squared=False; the threshold is in their units
    (e.g. from `tar_at_far` or `equal_error_rate` on validation pairs).
    """

    def __init__(self, threshold: float, squared: bool = True, *,
                 encoder: Optional["Module"] = None) -> None:
        self.threshold = _threshold("Gallery", threshold)
        self.squared = _flag("Gallery", "squared", squared)
        self.encoder = encoder
        self._rows: List[Any] = []
        self._owners: List[Hashable] = []

    @property
    def names(self) -> List[Hashable]:
        """The enrolled names, each once, in enrolment order."""
        return list(dict.fromkeys(self._owners))

    def __len__(self) -> int:
        """The number of enrolled embeddings."""
        return len(self._owners)

    def __repr__(self) -> str:
        return (f"Gallery(threshold={self.threshold}, squared={self.squared}, "
                f"{len(self.names)} names, {len(self)} embeddings)")

    def _matrix(self, op: str, embedding: Any) -> Tuple[Any, bool]:
        (data,) = _plain(op, embedding=embedding)
        single = data.ndim == 1
        data = data[None] if single else data
        if data.ndim != 2:
            raise ValueError(f"{op}: embedding must be (D,) or (M, D), got shape "
                             f"{data.shape}")
        _finite(op, "embedding", data)
        if self._rows:
            first = self._rows[0]
            if data.shape[1] != first.shape[1]:
                raise ValueError(f"{op}: embedding has {data.shape[1]} dims but the gallery "
                                 f"holds {first.shape[1]}-dim embeddings")
            if is_gpu(data) != is_gpu(first):
                raise TypeError(f"{op}: embedding and the enrolled embeddings must be all "
                                "NumPy or all GPU arrays")
        return data, single

    def add(self, name: Hashable, embedding: ArrayOrTensor) -> None:
        """Enrol `embedding` (D,) or (M, D) under `name`."""
        data, _ = self._matrix("Gallery.add", embedding)
        if name is None:
            raise ValueError("Gallery.add: name must not be None (None means "
                             "'not recognized')")
        self._rows.append(data)
        self._owners.extend([name] * len(data))

    def nearest(self, embedding: ArrayOrTensor) -> Tuple[List[Hashable], Any]:
        """(names, distances) of the nearest enrolled embedding for each query row
        ((D,) or (Q, D)), ignoring the threshold; ties go to the first enrolled."""
        op = "Gallery.nearest"
        if not self._rows:
            raise ValueError(f"{op}: the gallery is empty; add() someone first")
        queries, _ = self._matrix(op, embedding)
        xp = array_module(queries)
        enrolled = xp.concatenate(self._rows)
        d = cross_squared(queries, enrolled)
        if not self.squared:
            d = xp.sqrt(d)
        best = xp.argmin(d, axis=1)
        distances = d[xp.arange(len(d)), best]
        best = best.get() if is_gpu(best) else best
        return [self._owners[i] for i in best.tolist()], distances

    def identify(self, embedding: ArrayOrTensor) -> Union[Optional[Hashable],
                                                         List[Optional[Hashable]]]:
        """The name of the nearest enrolled embedding if its distance is <= threshold,
        else None ("not recognized"); a list for a batch (Q, D). An empty gallery
        recognizes no one."""
        queries, single = self._matrix("Gallery.identify", embedding)
        if not self._rows:
            names: List[Optional[Hashable]] = [None] * len(queries)
        else:
            owners, distances = self.nearest(queries)
            accepted = distances <= self.threshold
            accepted = accepted.get() if is_gpu(accepted) else accepted
            names = [o if ok else None for o, ok in zip(owners, accepted.tolist())]
        return names[0] if single else names

    def _encoder(self, op: str) -> "Module":
        if self.encoder is None:
            raise ValueError(f"{op}: this gallery has no encoder; pass encoder= to Gallery "
                             "or add embeddings with add()")
        return self.encoder

    def add_images(self, name: Hashable, images: ArrayOrTensor) -> None:
        """Enrol the embeddings of images (M, ...) under `name`."""
        self.add(name, embed(self._encoder("Gallery.add_images"), images))

    def identify_images(self, images: ArrayOrTensor) -> List[Optional[Hashable]]:
        """`identify` for each of images (Q, ...), embedded by the encoder."""
        return self.identify(embed(self._encoder("Gallery.identify_images"), images))


# ----------------------------------------------------------------------------- thresholds


def labelled_pairs(embeddings: ArrayOrTensor, labels: Any, *,
                   squared: bool = True) -> Tuple[Any, Any]:
    """Every pair i < j of embeddings (N, D): (distances (N(N-1)/2,) float64, same (...)
    bool: labels[i] == labels[j]), the validation pairs the threshold functions take."""
    op = "labelled_pairs"
    (x,) = _plain(op, embeddings=embeddings)
    if x.ndim != 2:
        raise ValueError(f"{op}: embeddings must be (N, D), got shape {x.shape}")
    labels = _labels(op, labels, len(x), x)
    squared = _flag(op, "squared", squared)
    xp = array_module(x)
    i, j = xp.triu_indices(len(x), k=1)
    d = pairwise_squared(x)[i, j]
    return (d if squared else xp.sqrt(d)), labels[i] == labels[j]


def _pairs(op: str, distances: Any, same: Any) -> Tuple[Any, Any]:
    if isinstance(distances, Tensor):
        distances = distances.data
    if isinstance(same, Tensor):
        same = same.data
    if isinstance(distances, (list, tuple)):
        distances = np.asarray(distances, dtype=np.float64)
    if isinstance(same, (list, tuple)):
        same = np.asarray(same)
    for name, a in (("distances", distances), ("same", same)):
        if not (isinstance(a, np.ndarray) or is_gpu(a)):
            raise TypeError(f"{op}: {name} must be an array, got {type(a).__name__}")
    if is_gpu(distances) != is_gpu(same):
        raise TypeError(f"{op}: distances and same must be both NumPy or both GPU arrays")
    if distances.dtype.kind not in "fiu":
        raise TypeError(f"{op}: distances must be real numbers, got dtype {distances.dtype}")
    if same.dtype != np.bool_ and same.dtype.kind not in "iu":
        raise TypeError(f"{op}: same must be bool (or 0/1), got dtype {same.dtype}")
    if distances.ndim != 1 or same.shape != distances.shape:
        raise ValueError(f"{op}: distances and same must be 1-D of one length, got shapes "
                         f"{distances.shape} and {same.shape}")
    xp = array_module(distances)
    if bool(xp.isnan(distances).any()):
        raise ValueError(f"{op}: distances contain NaN")
    if same.dtype != np.bool_:
        if bool(((same != 0) & (same != 1)).any()):
            raise ValueError(f"{op}: same must hold only 0 and 1")
        same = same.astype(bool)
    n_same = int(same.sum())
    if n_same == 0 or n_same == len(same):
        raise ValueError(f"{op}: need both same-person and different-person pairs, got "
                         f"{n_same} same of {len(same)}")
    return distances.astype(np.float64, copy=False), same


def roc_curve(distances: Any, same: Any) -> Tuple[Any, Any, Any]:
    """The ROC of the rule "same person when distance <= threshold" over labelled pairs.

    distances (P,), same (P,) bool. Returns (far, tar, thresholds), one point per distinct
    distance in increasing order, after a first point (0, 0) at threshold -inf: FAR (false
    accept rate) = the fraction of different-person pairs accepted, TAR (true accept rate)
    = the fraction of same-person pairs accepted. As scikit-learn's roc_curve on the score
    -distance with drop_intermediate=False (thresholds negated)."""
    distances, same = _pairs("roc_curve", distances, same)
    xp = array_module(distances)
    order = xp.argsort(distances, kind="stable")
    d, s = distances[order], same[order]
    accepted_same = xp.cumsum(s)
    accepted_diff = xp.cumsum(~s)
    last = xp.concatenate([xp.nonzero(d[1:] != d[:-1])[0],
                           xp.asarray([len(d) - 1], dtype=np.int64)])
    start = xp.zeros(1)
    far = xp.concatenate([start, accepted_diff[last] / float(accepted_diff[-1])])
    tar = xp.concatenate([start, accepted_same[last] / float(accepted_same[-1])])
    thresholds = xp.concatenate([xp.asarray([-np.inf]), d[last]])
    return far, tar, thresholds


def roc_auc(distances: Any, same: Any) -> float:
    """Area under `roc_curve` (trapezoids): the probability that a random same-person pair
    is closer than a random different-person pair (ties count one half)."""
    far, tar, _ = roc_curve(distances, same)
    return float(((far[1:] - far[:-1]) * (tar[1:] + tar[:-1])).sum() / 2)


def tar_at_far(distances: Any, same: Any, far: float = 1e-2) -> Tuple[float, float]:
    """(TAR, threshold) at the largest threshold whose FAR is <= `far`: the verification
    operating point "at most `far` of impostors accepted". threshold -inf (TAR 0) when
    even the smallest distance accepts too many impostors."""
    target = as_real("tar_at_far", "far", far)
    if not 0 <= target <= 1:
        raise ValueError(f"tar_at_far: far must be in [0, 1], got {far!r}")
    rates, tar, thresholds = roc_curve(distances, same)
    i = int((rates <= target).sum()) - 1   # FAR grows with the threshold
    return float(tar[i]), float(thresholds[i])


def equal_error_rate(distances: Any, same: Any) -> Tuple[float, float]:
    """(EER, threshold): the rate at which false accepts (FAR) and false rejects
    (FRR = 1 - TAR) are equal, linearly interpolated between the two ROC points around the
    crossing, and the threshold of the first ROC point where FRR <= FAR."""
    far, tar, thresholds = roc_curve(distances, same)
    frr = 1 - tar
    i = int((frr > far).sum())   # frr - far decreases along the curve; point 0 has frr > far
    gap0, gap1 = float(frr[i - 1] - far[i - 1]), float(frr[i] - far[i])
    step = gap0 / (gap0 - gap1)
    eer = float(far[i - 1]) + step * float(far[i] - far[i - 1])
    return eer, float(thresholds[i])
