"""fastconv.face, its nn layers and F.normalize / F.binary_cross_entropy_with_logits.

Oracles: the course's formulas by hand, plain NumPy loops over every triplet written from
the definitions in DESIGN.md 3c, central finite differences, PyTorch (normalize, BCE with
logits, triplet_margin_loss) and scikit-learn (ROC).
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable, List

import numpy as np
import pytest

import fastconv
from fastconv import face, nn
from fastconv.nn import functional as F
from fastconv.ops.metric import batch_triplet, rows_searchsorted

torch = pytest.importorskip("torch")

MINING = ("all", "hard", "semihard")


def tensor(a: np.ndarray) -> fastconv.Tensor:
    return fastconv.Tensor(a, requires_grad=True)


def numeric_grad(f: Callable[[np.ndarray], float], x: np.ndarray,
                 eps: float = 1e-6) -> np.ndarray:
    """Central differences of the scalar f at x (float64)."""
    g = np.zeros_like(x)
    for i in np.ndindex(x.shape):
        up, down = x.copy(), x.copy()
        up[i] += eps
        down[i] -= eps
        g[i] = (f(up) - f(down)) / (2 * eps)
    return g


# ----------------------------------------------------------------------------- brute force


def brute_batch_loss(x: np.ndarray, labels: np.ndarray, margin: float, mining: str,
                     squared: bool) -> float:
    """DESIGN.md 3c's batch_triplet_loss, one triplet at a time."""
    n = len(x)
    d = ((x[:, None, :] - x[None, :, :]) ** 2).sum(-1)
    if not squared:
        d = np.sqrt(d)
    terms: List[float] = []
    for a in range(n):
        pos = [p for p in range(n) if p != a and labels[p] == labels[a]]
        neg = [q for q in range(n) if labels[q] != labels[a]]
        if not pos or not neg:
            continue
        if mining == "all":
            terms += [d[a, p] - d[a, q] + margin for p in pos for q in neg
                      if d[a, p] - d[a, q] + margin > 0]
        elif mining == "hard":
            terms.append(max(max(d[a, pos]) - min(d[a, neg]) + margin, 0.0))
        else:
            for p in pos:
                farther = [d[a, q] for q in neg if d[a, q] > d[a, p]]
                d_an = min(farther) if farther else max(d[a, neg])
                if d[a, p] - d_an + margin > 0:
                    terms.append(d[a, p] - d_an + margin)
    return sum(terms) / len(terms) if terms else 0.0


def random_batch(rng: np.random.Generator, integer: bool) -> tuple:
    n = int(rng.integers(2, 13))
    dim = int(rng.integers(1, 5))
    labels = rng.integers(0, int(rng.integers(1, 5)), n)
    if integer:  # small integers: many exactly tied distances
        x = rng.integers(-2, 3, (n, dim)).astype(np.float64)
    else:
        x = rng.standard_normal((n, dim))
    return x, labels


# ----------------------------------------------------------------------------- triplet_loss


def test_triplet_loss_is_the_seeds_formula_by_hand() -> None:
    a = np.array([[0.0, 0.0], [0.0, 0.0]])
    p = np.array([[1.0, 0.0], [1.0, 0.0]])
    n = np.array([[0.5, 0.0], [0.0, 2.0]])
    # ||A-P||^2 = 1; ||A-N||^2 = 0.25 and 4: max(1 - 0.25 + 0.2, 0) = 0.95, max(-2.8, 0) = 0
    loss = face.triplet_loss(a, p, n, 0.2, reduction="none")
    np.testing.assert_allclose(loss.numpy(), [0.95, 0.0])
    # The quiz's answer: max(d(A,P) - d(A,N) + alpha, 0), not with -alpha or swapped.
    assert face.triplet_loss(a, p, n, 0.2).item() == pytest.approx(0.475)
    assert face.triplet_loss(a, p, n, 0.2, reduction="sum").item() == pytest.approx(0.95)
    # The margin is what stops the trivial all-zero embedding from scoring 0.
    zero = np.zeros((1, 3))
    assert face.triplet_loss(zero, zero, zero, 0.2).item() == pytest.approx(0.2)
    # Gradient by hand of |A-P|^2 - |A-N|^2: dA = 2(N - P), dP = 2(P - A), dN = 2(A - N);
    # the easy second row contributes nothing.
    ta, tp, tn = tensor(a), tensor(p), tensor(n)
    face.triplet_loss(ta, tp, tn, 0.2, reduction="sum").backward()
    np.testing.assert_allclose(ta.grad, [[-1.0, 0.0], [0.0, 0.0]])
    np.testing.assert_allclose(tp.grad, [[2.0, 0.0], [0.0, 0.0]])
    np.testing.assert_allclose(tn.grad, [[-1.0, 0.0], [0.0, 0.0]])


@pytest.mark.parametrize("squared", [True, False])
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_triplet_loss_gradient_by_finite_differences(squared: bool, reduction: str) -> None:
    rng = np.random.default_rng(1)
    a, p, n = (rng.standard_normal((5, 4)) for _ in range(3))
    weights = rng.standard_normal(5)

    def value(a_: np.ndarray, p_: np.ndarray, n_: np.ndarray) -> float:
        out = face.triplet_loss(a_, p_, n_, 0.7, squared=squared, reduction=reduction)
        return float((out.numpy() * weights).sum() if reduction == "none" else out.item())

    ts = [tensor(v) for v in (a, p, n)]
    out = face.triplet_loss(*ts, 0.7, squared=squared, reduction=reduction)
    (out * fastconv.Tensor(weights) if reduction == "none" else out).sum().backward()
    np.testing.assert_allclose(ts[0].grad, numeric_grad(lambda v: value(v, p, n), a), atol=1e-6)
    np.testing.assert_allclose(ts[1].grad, numeric_grad(lambda v: value(a, v, n), p), atol=1e-6)
    np.testing.assert_allclose(ts[2].grad, numeric_grad(lambda v: value(a, p, v), n), atol=1e-6)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_triplet_loss_unsquared_matches_torch(dtype: type) -> None:
    rng = np.random.default_rng(2)
    a, p, n = (rng.standard_normal((7, 5)).astype(dtype) for _ in range(3))
    ts = [tensor(v) for v in (a, p, n)]
    loss = face.triplet_loss(*ts, 1.0, squared=False)
    loss.backward()
    refs = [torch.tensor(v, requires_grad=True) for v in (a, p, n)]
    # torch adds eps to the difference; eps=0 is the exact distance of the contract.
    expected = torch.nn.functional.triplet_margin_loss(*refs, margin=1.0, eps=0.0)
    expected.backward()
    tol = 1e-5 if dtype == np.float32 else 1e-12
    assert loss.dtype == dtype
    np.testing.assert_allclose(loss.item(), expected.item(), rtol=tol)
    for t, r in zip(ts, refs):
        np.testing.assert_allclose(t.grad, r.grad.numpy(), rtol=tol, atol=tol)


def test_unsquared_gradient_is_zero_at_zero_distance_without_nan() -> None:
    a = np.array([[1.0, 2.0]])
    n = np.array([[1.0, 3.0]])
    ta, tp, tn = tensor(a), tensor(a.copy()), tensor(n)
    loss = face.triplet_loss(ta, tp, tn, 2.0, squared=False)
    assert loss.item() == pytest.approx(1.0)   # 0 - 1 + 2: no epsilon in the value
    loss.backward()
    # Only d(A, N) = |A - N| moves: d/dA = -(A - N)/|A - N|, the zero-distance pair adds 0.
    np.testing.assert_array_equal(tp.grad, [[0.0, 0.0]])
    np.testing.assert_allclose(ta.grad, [[0.0, 1.0]])
    np.testing.assert_allclose(tn.grad, [[0.0, -1.0]])
    x = tensor(np.array([[0.0, 1.0], [0.0, 1.0], [3.0, 1.0]]))
    face.batch_triplet_loss(x, [0, 0, 1], 1.0, squared=False, mining="hard").backward()
    assert np.isfinite(x.grad).all()


# ----------------------------------------------------------------------------- batch loss


@pytest.mark.parametrize("mining", MINING)
@pytest.mark.parametrize("squared", [True, False])
def test_batch_triplet_loss_matches_brute_force(mining: str, squared: bool) -> None:
    rng = np.random.default_rng(3)
    for trial in range(40):
        x, labels = random_batch(rng, integer=trial % 2 == 0)
        margin = float(rng.choice([0.0, 0.5, 1.0]))
        got = face.batch_triplet_loss(x, labels, margin, mining=mining, squared=squared)
        expected = brute_batch_loss(x, labels, margin, mining, squared)
        assert got.item() == pytest.approx(expected, rel=1e-9, abs=1e-12), (x, labels)


@pytest.mark.parametrize("mining", MINING)
def test_batch_triplet_loss_in_blocks_matches_brute_force_with_gradient(mining: str) -> None:
    # Blocks of one to a few anchors take the same path as large batches.
    rng = np.random.default_rng(4)
    for trial in range(12):
        x, labels = random_batch(rng, integer=False)
        for squared in (True, False):
            value, grad, _ = batch_triplet(x, labels, 0.5, mining, squared, True,
                                           block_elements=int(rng.integers(1, 40)))
            expected = brute_batch_loss(x, labels, 0.5, mining, squared)
            assert value == pytest.approx(expected, rel=1e-9, abs=1e-12)
            fd = numeric_grad(lambda v: brute_batch_loss(v, labels, 0.5, mining, squared), x)
            np.testing.assert_allclose(grad, fd, atol=1e-5)


@pytest.mark.parametrize("mining", MINING)
def test_batch_triplet_loss_autograd_by_finite_differences(mining: str) -> None:
    rng = np.random.default_rng(5)
    x = rng.standard_normal((10, 3))
    labels = np.array([0, 0, 0, 1, 1, 2, 2, 2, 2, 3])   # class 3 has one sample
    t = tensor(x)
    loss = face.batch_triplet_loss(t, labels, 1.0, mining=mining)
    (loss * 3.0).backward()
    fd = numeric_grad(lambda v: 3 * brute_batch_loss(v, labels, 1.0, mining, True), x)
    np.testing.assert_allclose(t.grad, fd, atol=1e-5)
    assert isinstance(loss, fastconv.Tensor) and loss.shape == () and loss.dtype == np.float64


@pytest.mark.parametrize("mining", MINING)
def test_batches_without_triplets_give_zero_loss_and_gradient(mining: str) -> None:
    rng = np.random.default_rng(6)
    x = rng.standard_normal((5, 3))
    for labels in ([7, 7, 7, 7, 7], [0, 1, 2, 3, 4]):   # one class; only singletons
        t = tensor(x)
        loss = face.batch_triplet_loss(t, labels, 0.2, mining=mining)
        loss.backward()
        assert loss.item() == 0.0
        np.testing.assert_array_equal(t.grad, np.zeros_like(x))
    assert face.batch_triplet_loss(np.zeros((0, 3)), np.zeros(0, int)).item() == 0.0


def test_hard_mining_takes_the_farthest_positive_and_closest_negative() -> None:
    x = np.array([[0.0], [1.0], [3.0], [2.0], [10.0]])
    labels = np.array([0, 0, 0, 1, 1])
    # Anchor 0: farthest positive 3 (d=9), closest negative 2 (d=4): 9 - 4 + 1 = 6, ...
    per_anchor = []
    d = (x - x.T) ** 2
    for a in range(5):
        pos = [p for p in range(5) if p != a and labels[p] == labels[a]]
        neg = [q for q in range(5) if labels[q] != labels[a]]
        per_anchor.append(max(max(d[a, pos]) - min(d[a, neg]) + 1.0, 0.0))
    assert per_anchor[0] == 6.0
    got = face.batch_triplet_loss(x, labels, 1.0, mining="hard").item()
    assert got == pytest.approx(np.mean(per_anchor))


def test_semihard_prefers_the_closest_negative_beyond_the_positive() -> None:
    # Classes 1, 2, 3 are single samples: only anchors 0 and 1 have a positive (d = 4).
    # Anchor 0 (x=0): negatives at d = 1, 9, 16 -> the closest beyond 4 is 9: 4 - 9 + 6 = 1.
    # Anchor 1 (x=2): negatives at d = 1, 1, 4, none beyond 4 -> the farthest, 4: 6.
    x = np.array([[0.0], [2.0], [1.0], [3.0], [4.0]])
    labels = np.array([0, 0, 1, 2, 3])
    assert face.batch_triplet_loss(x, labels, 6.0, mining="semihard").item() == 3.5
    # With margin 2 anchor 0's term is negative: only anchor 1's (2) enters the mean.
    assert face.batch_triplet_loss(x, labels, 2.0, mining="semihard").item() == 2.0


def test_rows_searchsorted_matches_numpy_row_by_row() -> None:
    rng = np.random.default_rng(7)
    for width in (0, 1, 5, 12, 13, 40):
        rows = np.sort(rng.integers(0, 6, (3, width)).astype(float), axis=1)
        queries = rng.integers(-1, 7, (3, 9)).astype(float)
        queries[0, 0] = np.inf
        for side in ("left", "right"):
            expected = [np.searchsorted(r, q, side) for r, q in zip(rows, queries)]
            np.testing.assert_array_equal(rows_searchsorted(rows, queries, side), expected)


def test_batch_loss_layer_and_float32() -> None:
    rng = np.random.default_rng(8)
    x = rng.standard_normal((16, 4)).astype(np.float32)
    labels = np.repeat(np.arange(4), 4)
    layer = nn.BatchTripletLoss(0.3, mining="semihard", squared=False)
    loss = layer(fastconv.Tensor(x), fastconv.Tensor(labels))
    assert loss.dtype == np.float32
    expected = brute_batch_loss(x.astype(np.float64), labels, 0.3, "semihard", False)
    assert loss.item() == pytest.approx(expected, rel=1e-5)
    triplet = nn.TripletLoss(0.3, reduction="sum")
    assert triplet(x[:4], x[4:8], x[8:12]).item() == pytest.approx(
        face.triplet_loss(x[:4], x[4:8], x[8:12], 0.3, reduction="sum").item())
    assert "semihard" in repr(layer)


# ----------------------------------------------------------------------------- distances


@pytest.mark.parametrize("squared", [True, False])
def test_pairwise_distances_values_and_gradient(squared: bool) -> None:
    from scipy.spatial.distance import cdist

    rng = np.random.default_rng(9)
    x = rng.standard_normal((6, 3)) + 5.0     # far from the origin: cancellation
    x[4] = x[1]                               # a zero off-diagonal distance
    d = face.pairwise_distances(x, squared=squared)
    expected = cdist(x, x, "sqeuclidean" if squared else "euclidean")
    assert isinstance(d, np.ndarray) and d.dtype == np.float64
    np.testing.assert_allclose(d, expected, atol=1e-12)
    assert (np.diag(d) == 0).all()
    weights = rng.standard_normal((6, 6))
    t = tensor(x)
    (face.pairwise_distances(t, squared=squared) * fastconv.Tensor(weights)).sum().backward()
    assert np.isfinite(t.grad).all()
    if squared:
        fd = numeric_grad(lambda v: float((cdist(v, v, "sqeuclidean") * weights).sum()), x)
        np.testing.assert_allclose(t.grad, fd, atol=1e-5)
    else:
        # Away from the duplicate rows the gradient is the Euclidean one.
        keep = [0, 2, 3, 5]
        w = weights[np.ix_(keep, keep)]
        t2 = tensor(x[keep])
        (face.pairwise_distances(t2, squared=False) * fastconv.Tensor(w)).sum().backward()
        fd = numeric_grad(lambda v: float((cdist(v, v) * w).sum()), x[keep])
        np.testing.assert_allclose(t2.grad, fd, atol=1e-5)


def test_paired_distances_and_verify_by_hand() -> None:
    a = np.array([[0.0, 0.0], [1.0, 1.0], [0.0, 0.0]])
    b = np.array([[3.0, 4.0], [1.0, 1.0], [0.6, 0.8]])
    np.testing.assert_allclose(face.paired_distances(a, b), [25.0, 0.0, 1.0])
    np.testing.assert_allclose(face.paired_distances(a, b, squared=False), [5.0, 0.0, 1.0])
    # d <= threshold is the same person; the boundary is accepted.
    np.testing.assert_array_equal(face.verify(a, b, 1.0), [False, True, True])
    np.testing.assert_array_equal(face.verify(a, b, 4.9, squared=False), [False, True, True])
    np.testing.assert_array_equal(face.verify(a, b, 5.0, squared=False), [True, True, True])
    assert face.verify(a[0], b[0], 25.0).shape == ()


# ----------------------------------------------------------------------------- recognition


def test_gallery_identifies_the_nearest_within_the_threshold() -> None:
    gallery = face.Gallery(threshold=1.0)
    gallery.add("alice", np.array([0.0, 0.0]))
    gallery.add("bob", np.array([[4.0, 0.0], [0.0, 4.0]]))   # two photos of bob
    assert gallery.names == ["alice", "bob"] and len(gallery) == 3
    assert gallery.identify(np.array([0.5, 0.5])) == "alice"       # d = 0.5
    assert gallery.identify(np.array([0.0, 3.2])) == "bob"         # nearest: bob's 2nd
    assert gallery.identify(np.array([1.0, 0.0])) == "alice"       # d = 1: on the threshold
    assert gallery.identify(np.array([2.0, 2.0])) is None          # not recognized
    assert gallery.identify(np.array([[0.0, 0.1], [9.0, 9.0], [4.0, 0.5]])) == [
        "alice", None, "bob"]
    names, distances = gallery.nearest(np.array([[2.0, 2.0]]))
    assert names == ["alice"] and distances[0] == pytest.approx(8.0)
    euclid = face.Gallery(threshold=1.0, squared=False)
    euclid.add(0, np.array([0.0, 0.0]))
    assert euclid.identify(np.array([0.0, 0.9])) == 0
    assert euclid.identify(np.array([0.9, 0.9])) is None           # d = 1.27
    assert face.Gallery(1.0).identify(np.zeros(2)) is None         # empty gallery


def test_gallery_embeds_images_through_the_encoder() -> None:
    fastconv.manual_seed(0)
    encoder = nn.Sequential(nn.Flatten(), nn.Linear(4, 3), nn.Normalize())
    rng = np.random.default_rng(10)
    images = rng.standard_normal((3, 1, 2, 2)).astype(np.float32)
    gallery = face.Gallery(threshold=1e-6, encoder=encoder)
    gallery.add_images("a", images[:1])
    gallery.add_images("b", images[1:])
    assert gallery.identify_images(images) == ["a", "b", "b"]
    emb = face.embed(encoder, images, batch_size=2)
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, rtol=1e-6)
    assert encoder.training   # embed restores the mode
    with pytest.raises(ValueError, match="no encoder"):
        face.Gallery(1.0).add_images("a", images)


def test_one_shot_recognition_hand_case() -> None:
    # Three persons, one enrolment each; queries near each, and one stranger.
    gallery = face.Gallery(threshold=0.5)
    for name, e in zip("xyz", np.eye(3)):
        gallery.add(name, e)
    queries = np.array([[0.9, 0.1, 0.0], [0.0, 0.2, 0.9], [0.1, 0.8, 0.1], [0.6, 0.6, 0.6]])
    assert gallery.identify(queries) == ["x", "z", "y", None]


# ----------------------------------------------------------------------------- features


def test_similarity_features_and_their_gradients() -> None:
    rng = np.random.default_rng(11)
    a = np.abs(rng.standard_normal((4, 5)))
    b = np.abs(rng.standard_normal((4, 5)))
    a[0, 0] = b[0, 0] = 0.0                      # 0 / 0 -> 0
    np.testing.assert_allclose(face.similarity_features(a, b), np.abs(a - b))
    with np.errstate(invalid="ignore"):
        expected = np.nan_to_num((a - b) ** 2 / (a + b))
    np.testing.assert_allclose(face.similarity_features(a, b, "chi2"), expected)
    a[0, 0] = 0.3
    weights = rng.standard_normal((4, 5))
    for kind in ("abs", "chi2"):
        ta, tb = tensor(a), tensor(b)
        (face.similarity_features(ta, tb, kind) * fastconv.Tensor(weights)).sum().backward()

        def value(u: np.ndarray, v: np.ndarray) -> float:
            return float((face.similarity_features(u, v, kind) * weights).sum())

        np.testing.assert_allclose(ta.grad, numeric_grad(lambda u: value(u, b), a), atol=1e-6)
        np.testing.assert_allclose(tb.grad, numeric_grad(lambda v: value(a, v), b), atol=1e-6)


def test_siamese_classifier_shares_one_encoder() -> None:
    fastconv.manual_seed(1)
    encoder = nn.Sequential(nn.Flatten(), nn.Linear(6, 4), nn.ReLU())
    model = nn.SiameseClassifier(encoder, 4, kind="chi2")
    names = [n for n, _ in model.named_parameters()]
    assert names == ["encoder.1.weight", "encoder.1.bias", "head.weight", "head.bias"]
    rng = np.random.default_rng(12)
    xa = rng.standard_normal((5, 1, 2, 3))
    xb = rng.standard_normal((5, 1, 2, 3))
    model.double()
    logits = model(xa, xb)
    # The course's logistic unit: sum_k w_k chi2_k + b.
    fa, fb = (encoder(fastconv.Tensor(v)).numpy() for v in (xa, xb))
    with np.errstate(invalid="ignore"):
        chi2 = np.nan_to_num((fa - fb) ** 2 / (fa + fb))
    w, bias = model.head.weight.data, model.head.bias.data
    np.testing.assert_allclose(logits.numpy(), chi2 @ w[0] + bias[0], rtol=1e-10)
    target = np.array([1.0, 0.0, 1.0, 0.0, 1.0])
    F.binary_cross_entropy_with_logits(logits, target).backward()
    shared = {n: p.grad.copy() for n, p in model.named_parameters()}
    # The same loss with each branch's embedding frozen in turn: the two gradients sum to
    # the shared one (one parameter set, both branches' gradients added).
    branch_sum = {n: np.zeros_like(g) for n, g in shared.items()}
    for frozen in ("a", "b"):
        model.zero_grad()
        ea, eb = model.embed(xa), model.embed(xb)
        ea = ea.detach() if frozen == "a" else ea
        eb = eb.detach() if frozen == "b" else eb
        out = model.head(face.similarity_features(ea, eb, "chi2")).reshape(5)
        F.binary_cross_entropy_with_logits(out, target).backward()
        for n, p in model.named_parameters():
            if n.startswith("encoder"):
                branch_sum[n] += p.grad
    for n in shared:
        if n.startswith("encoder"):
            np.testing.assert_allclose(shared[n], branch_sum[n], rtol=1e-10, atol=1e-14)


def test_siamese_classifier_on_embeddings_and_its_default_dim() -> None:
    rng = np.random.default_rng(18)
    ea, eb = rng.standard_normal((4, 3)), rng.standard_normal((4, 3))
    model = nn.SiameseClassifier(embedding_dim=3).double()   # encoder None: the identity
    w, b = model.head.weight.data[0], model.head.bias.data[0]
    np.testing.assert_allclose(model(ea, eb).numpy(), np.abs(ea - eb) @ w + b, rtol=1e-12)
    encoder = nn.Sequential(nn.Linear(6, 5), nn.ReLU(), nn.Linear(5, 2), nn.Normalize())
    assert nn.SiameseClassifier(encoder).head.weight.shape == (1, 2)
    with pytest.raises(ValueError, match="pass embedding_dim"):
        nn.SiameseClassifier(nn.Flatten())


def test_siamese_classifier_learns_to_verify() -> None:
    # Pairs of noisy copies of 3 prototypes: the logistic unit on |f(a) - f(b)| separates
    # same from different after a few Adam steps.
    fastconv.manual_seed(2)
    rng = np.random.default_rng(13)
    protos = rng.standard_normal((3, 8))
    ia, ib = rng.integers(0, 3, 200), rng.integers(0, 3, 200)
    xa = (protos[ia] + 0.1 * rng.standard_normal((200, 8))).astype(np.float32)
    xb = (protos[ib] + 0.1 * rng.standard_normal((200, 8))).astype(np.float32)
    same = (ia == ib).astype(np.float32)
    model = nn.SiameseClassifier(nn.Sequential(nn.Linear(8, 8), nn.Normalize()), 8)
    opt = fastconv.optim.Adam(model.parameters(), lr=0.05)
    for _ in range(60):
        opt.zero_grad()
        loss = nn.BCEWithLogitsLoss()(model(xa, xb), same)
        loss.backward()
        opt.step()
    with fastconv.no_grad():
        predicted = model(xa, xb).numpy() > 0
    assert (predicted == same.astype(bool)).mean() > 0.95


# ----------------------------------------------------------------------------- functional


@pytest.mark.parametrize("p", [1.0, 2.0, 3.0, float("inf")])
@pytest.mark.parametrize("dim", [1, 0, -1])
def test_normalize_matches_torch(p: float, dim: int) -> None:
    rng = np.random.default_rng(14)
    x = rng.standard_normal((4, 5, 3))
    x[1, :, 2] = 0.0                     # a zero vector along dim 1
    x[:, 2, 1] = 1e-14                   # norms below eps along dims 0 and 1
    g = rng.standard_normal(x.shape)
    t = tensor(x)
    out = F.normalize(t, p=p, dim=dim)
    (out * fastconv.Tensor(g)).sum().backward()
    ref = torch.tensor(x, requires_grad=True)
    expected = torch.nn.functional.normalize(ref, p=p, dim=dim)
    (expected * torch.tensor(g)).sum().backward()
    np.testing.assert_allclose(out.numpy(), expected.detach().numpy(), rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(t.grad, ref.grad.numpy(), rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(nn.Normalize(p, dim)(fastconv.Tensor(x)).numpy(), out.numpy())


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("weighted", [False, True])
def test_binary_cross_entropy_with_logits_matches_torch(reduction: str, weighted: bool) -> None:
    rng = np.random.default_rng(15)
    x = rng.standard_normal((6, 3)) * 30            # saturated logits included
    x[0, 0] = 0.0                                   # the gradient at exactly 0
    target = rng.random((6, 3))
    weight = rng.random((1, 3)) if weighted else None
    pos_weight = rng.random(3) * 3 if weighted else None
    tx, tt = tensor(x), tensor(target)
    out = F.binary_cross_entropy_with_logits(tx, tt, weight, reduction=reduction,
                                             pos_weight=pos_weight)
    out.sum().backward()
    rx = torch.tensor(x, requires_grad=True)
    rt = torch.tensor(target, requires_grad=True)
    expected = torch.nn.functional.binary_cross_entropy_with_logits(
        rx, rt, None if weight is None else torch.tensor(weight), reduction=reduction,
        pos_weight=None if pos_weight is None else torch.tensor(pos_weight))
    expected.sum().backward()
    np.testing.assert_allclose(out.numpy(), expected.detach().numpy(), rtol=1e-12)
    np.testing.assert_allclose(tx.grad, rx.grad.numpy(), rtol=1e-10, atol=1e-15)
    np.testing.assert_allclose(tt.grad, rt.grad.numpy(), rtol=1e-10, atol=1e-15)


# ----------------------------------------------------------------------------- thresholds


def test_roc_matches_scikit_learn() -> None:
    from sklearn.metrics import roc_auc_score
    from sklearn.metrics import roc_curve as sk_roc

    rng = np.random.default_rng(16)
    same = rng.random(300) < 0.3
    d = np.round(rng.random(300) + 0.5 * ~same, 2)   # rounded: tied distances
    far, tar, thresholds = face.roc_curve(d, same)
    sk_far, sk_tar, sk_thr = sk_roc(same, -d, drop_intermediate=False)
    np.testing.assert_allclose(far, sk_far)
    np.testing.assert_allclose(tar, sk_tar)
    np.testing.assert_allclose(thresholds[1:], -sk_thr[1:])
    assert thresholds[0] == -np.inf
    assert face.roc_auc(d, same) == pytest.approx(roc_auc_score(same, -d))


def test_tar_at_far_and_equal_error_rate_by_hand() -> None:
    same = np.array([True, True, True, True, False, False, False, False])
    d = np.array([0.1, 0.2, 0.3, 0.6, 0.4, 0.7, 0.8, 0.9])
    # Accept d <= 0.3: TAR 3/4 at FAR 0; d <= 0.6: TAR 1 at FAR 1/4 (the impostor at 0.4).
    assert face.tar_at_far(d, same, 0.0) == (0.75, 0.3)
    assert face.tar_at_far(d, same, 0.2) == (0.75, 0.3)
    assert face.tar_at_far(d, same, 0.25) == (1.0, 0.6)
    assert face.tar_at_far(d, same, 1.0) == (1.0, 0.9)
    # FRR 1/4 and FAR 0 at 0.3, FRR 1/4 and FAR 1/4 at 0.4: they meet at 0.25.
    assert face.equal_error_rate(d, same) == (pytest.approx(0.25), 0.4)
    separable = np.array([0.1, 0.2, 0.5, 0.6])
    assert face.equal_error_rate(separable, [1, 1, 0, 0]) == (0.0, 0.2)
    assert face.roc_auc(separable, [1, 1, 0, 0]) == 1.0
    # Even the closest pair is an impostor: nothing can be accepted at FAR 0.
    assert face.tar_at_far([0.1, 0.2], [0, 1], 0.0) == (0.0, -np.inf)


def test_labelled_pairs() -> None:
    x = np.array([[0.0], [1.0], [3.0]])
    d, same = face.labelled_pairs(x, [5, 5, 6])
    np.testing.assert_allclose(d, [1.0, 9.0, 4.0])
    np.testing.assert_array_equal(same, [True, False, False])


# ----------------------------------------------------------------------------- errors


def test_bad_inputs_raise_clear_errors() -> None:
    x = np.zeros((4, 3))
    with pytest.raises(ValueError, match=r"anchor, positive, negative must have one shape"):
        face.triplet_loss(x, x, np.zeros((4, 2)))
    with pytest.raises(ValueError, match="margin must be a finite number >= 0"):
        face.triplet_loss(x, x, x, margin=-0.1)
    with pytest.raises(ValueError, match="margin"):
        nn.TripletLoss(margin=-1.0)
    with pytest.raises(ValueError, match="margin"):
        nn.BatchTripletLoss(margin=float("nan"))
    with pytest.raises(TypeError, match="margin must be a real number"):
        face.batch_triplet_loss(x, [0, 0, 1, 1], margin="0.2")
    with pytest.raises(ValueError, match=r"labels must have shape \(4,\).*got shape \(3,\)"):
        face.batch_triplet_loss(x, [0, 0, 1])
    with pytest.raises(TypeError, match="labels must have an integer dtype"):
        face.batch_triplet_loss(x, np.array([0.0, 0.0, 1.0, 1.0]))
    with pytest.raises(ValueError, match="mining must be one of 'all', 'hard', 'semihard'"):
        face.batch_triplet_loss(x, [0, 0, 1, 1], mining="easy")
    with pytest.raises(ValueError, match=r"embeddings must be \(N, D\)"):
        face.batch_triplet_loss(np.zeros(4), [0, 0, 1, 1])
    with pytest.raises(ValueError, match="NaN or infinite"):
        face.batch_triplet_loss(np.full((4, 3), np.nan), [0, 0, 1, 1])
    with pytest.raises(TypeError, match="float32 or float64"):
        face.pairwise_distances(np.zeros((3, 2), dtype=np.int64))
    with pytest.raises(TypeError, match="dtype"):
        face.triplet_loss(x, x.astype(np.float32), x)
    with pytest.raises(ValueError, match="emb_a, emb_b must have one shape"):
        face.verify(x, np.zeros((3, 3)), 1.0)
    with pytest.raises(ValueError, match="threshold must be a distance >= 0"):
        face.verify(x, x, -1.0)
    with pytest.raises(ValueError, match="kind must be one of 'abs', 'chi2'"):
        face.similarity_features(x, x, "l2")
    with pytest.raises(ValueError, match="reduction must be one of"):
        face.triplet_loss(x, x, x, reduction="max")
    with pytest.raises(ValueError, match="3 dims but the gallery holds 2-dim"):
        gallery = face.Gallery(1.0)
        gallery.add("a", np.zeros(2))
        gallery.add("b", np.zeros(3))
    with pytest.raises(ValueError, match="need both same-person and different-person"):
        face.roc_auc([0.1, 0.2], [True, True])
    with pytest.raises(ValueError, match="1-D of one length"):
        face.roc_curve([0.1, 0.2], [True])
    with pytest.raises(ValueError, match="kind must be one of"):
        nn.SiameseClassifier(nn.Identity(), 3, kind="l1")
    with pytest.raises(ValueError, match="target shape"):
        F.binary_cross_entropy_with_logits(np.zeros(3), np.zeros(4))
    with pytest.raises(ValueError, match="p must be a number > 0"):
        F.normalize(fastconv.Tensor(x), p=0)
    with pytest.raises(ValueError, match="x_a and x_b must have one shape"):
        nn.SiameseClassifier(nn.Identity(), 3)(np.zeros((2, 3)), np.zeros((3, 3)))


# ----------------------------------------------------------------------------- devices


@pytest.mark.cuda
@pytest.mark.parametrize("mining", MINING)
def test_batch_triplet_loss_on_the_gpu_matches_numpy(mining: str) -> None:
    import cupy

    rng = np.random.default_rng(17)
    x = rng.standard_normal((300, 16))
    labels = rng.integers(0, 40, 300)
    t_cpu, t_gpu = tensor(x), fastconv.Tensor(cupy.asarray(x), requires_grad=True)
    cpu = face.batch_triplet_loss(t_cpu, labels, 0.3, mining=mining, squared=False)
    gpu = face.batch_triplet_loss(t_gpu, cupy.asarray(labels), 0.3, mining=mining,
                                  squared=False)
    cpu.backward()
    gpu.backward()
    assert float(gpu.data) == pytest.approx(cpu.item(), rel=1e-9)
    np.testing.assert_allclose(cupy.asnumpy(t_gpu.grad), t_cpu.grad, atol=1e-9)


# ----------------------------------------------------------------------------- CLI


def test_train_siamese_quick(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    pytest.importorskip("sklearn")
    pytest.importorskip("skimage")
    pytest.importorskip("matplotlib")
    from fastconv import cli

    plot = tmp_path / "roc.png"
    assert cli.main(["train-siamese", "--quick", "--no-progress", "--seed", "0",
                     "--plot", str(plot)]) == 0
    out = capsys.readouterr().out
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    for needle in ("verification AUC", "TAR@FAR=1e-2", "one-shot 1:4 accuracy", "lfw_subset",
                   "raw pixels", "digits: recipe 4 ep", str(plot)):
        assert needle in out


def test_train_siamese_selection_sees_only_the_seen_classes(
        monkeypatch: pytest.MonkeyPatch) -> None:
    # --select's folds train on 4 of the digits 0-5 and verify on the other 2: 6-9 are
    # never loaded, every row of the table is printed and the lowest mean ratio wins.
    pytest.importorskip("sklearn")
    from fastconv.examples import train_siamese as ts

    loaded: List[tuple] = []
    real = ts.load_digits

    def spy(classes: tuple) -> tuple:
        loaded.append(tuple(classes))
        return real(classes)

    monkeypatch.setattr(ts, "load_digits", spy)
    candidates = [ts.Recipe(1), ts.Recipe(1, channels=2, mining="all", augment="none")]
    lines: List[str] = []
    best = ts.select(candidates, seed=0, echo=lines.append, folds=ts.SEEN_FOLDS[:2])
    assert loaded and all(set(c) <= set(ts.SEEN) for c in loaded)
    rows = [line for line in lines if line.startswith(("1 ep",))]
    assert len(rows) == 2
    ratios = [float(row.split()[-3]) for row in rows]
    assert best == candidates[int(np.argmin(ratios))]
    assert len(ts.SEEN_FOLDS) == 15 and all(len(f) == 2 for f in ts.SEEN_FOLDS)
    assert ts.DIGITS in ts.CANDIDATES


def test_train_siamese_batches_and_shift() -> None:
    from fastconv.examples import train_siamese as ts

    rng = np.random.default_rng(3)
    images = rng.random((12, 1, 5, 5)).astype(np.float32)
    labels = np.repeat([4, 7, 9], 4)
    # A shift moves each image by -1, 0 or +1 pixel per axis, zeros coming in.
    shifted = ts.random_shift(images, np.random.default_rng(0))
    for img, out in zip(images, shifted):
        padded = np.pad(img[0], 1)
        assert any(np.array_equal(out[0], padded[dy:dy + 5, dx:dx + 5])
                   for dy in range(3) for dx in range(3))
    # Class part: per_class of every class; instance part: VIEWS copies of each image,
    # labelled by its index (no augmentation: the copies are equal).
    parts = ts.digit_batches(images, labels, 2, 3, None)(np.random.default_rng(1))
    (xc, yc), (xi, yi) = parts
    assert sorted(yc.tolist()) == [4, 4, 7, 7, 9, 9]
    assert all(any(np.array_equal(x, images[k]) for k in np.flatnonzero(labels == y))
               for x, y in zip(xc, yc))
    assert len(yi) == 3 * ts.VIEWS and len(set(yi.tolist())) == 3
    for x, y in zip(xi, yi):
        np.testing.assert_array_equal(x, images[y])
    only = ts.digit_batches(images, labels, 0, 2, None)(np.random.default_rng(1))
    assert len(only) == 1 and len(only[0][1]) == 2 * ts.VIEWS


def test_all_three_minings_agree_on_an_easy_batch() -> None:
    # Every triplet is satisfied by more than the margin: no mining finds a positive loss.
    x = np.array([[0.0], [0.1], [5.0], [5.1]])
    for mining in MINING:
        assert face.batch_triplet_loss(x, [0, 0, 1, 1], 0.5, mining=mining).item() == 0.0
