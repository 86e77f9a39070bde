"""Every public op against systematically broken arguments: one table of valid calls, and
for each argument of each call the same call with that argument replaced by None, a wrong
type, a wrong dtype, a non-finite value or an absurd size. Each must raise TypeError or
ValueError (MemoryError for a size that is valid but cannot be allocated) whose message
names the argument; never another exception, a crash or a result.

A new op joins by adding one VALID entry (its valid call and which arguments are arrays,
geometry or numbers)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Tuple

import numpy as np
import pytest

import fastconv
from fastconv.bench.cases import OPS

rng = np.random.default_rng(30)
X = rng.standard_normal((2, 3, 9, 9))
W = rng.standard_normal((4, 3, 3, 3))
DY = rng.standard_normal((2, 4, 7, 7))  # conv of X with W at padding 0
_CORNERS = np.sort(rng.uniform(0, 50, (6, 2, 2)), axis=1)  # (box, corner, x/y)
BOXES = _CORNERS.reshape(6, 4)  # x1, y1, x2, y2 with x1 <= x2, y1 <= y2
SCORES = rng.uniform(0, 1, 6)
LABELS = rng.integers(0, 3, 6)
ROIS = np.array([[0, 1.0, 1.0, 6.0, 7.0], [1, 0.5, 2.0, 8.0, 5.0]])
_, POOL_IDX = fastconv.max_pool(X, 3, stride=2, return_indices=True)
_, ROI_IDX = fastconv.roi_pool(X, ROIS, 2, return_indices=True)


@dataclass
class Call:
    fn: Callable[..., Any]
    args: Dict[str, Any]
    arrays: Tuple[str, ...]  # float arrays (None, a list, int dtype are wrong)
    sizes: Tuple[str, ...] = ()  # geometry: 2**62 is absurd, -1 and 0 invalid
    reals: Tuple[str, ...] = ()  # real numbers: nan and a string are wrong
    positional: int = 0  # how many leading args are positional
    optional: Tuple[str, ...] = ()  # None is valid (pooling's stride: kernel_size)

    def run(self, **changed: Any) -> Any:
        values = {**self.args, **changed}
        names = list(self.args)
        pos = [values[n] for n in names[:self.positional]]
        kw = {n: values[n] for n in names[self.positional:]}
        return self.fn(*pos, **kw)


VALID: Dict[str, Call] = {
    "conv": Call(fastconv.conv, dict(x=X, w=W, stride=1, padding=1, dilation=1, groups=1),
                 ("x", "w"), ("stride", "padding", "dilation", "groups"), positional=2),
    "conv_backward_input": Call(fastconv.conv_backward_input,
                                dict(dy=DY, w=W, input_shape=X.shape, stride=1),
                                ("dy", "w"), ("input_shape", "stride"), positional=3),
    "conv_backward_weight": Call(fastconv.conv_backward_weight,
                                 dict(x=X, dy=DY, kernel_size=3, stride=1),
                                 ("x", "dy"), ("kernel_size", "stride"), positional=3),
    "im2col": Call(fastconv.im2col, dict(x=X, kernel_size=3, stride=1, dilation=1), ("x",),
                   ("kernel_size", "stride", "dilation"), positional=2),
    "col2im": Call(fastconv.col2im, dict(cols=fastconv.im2col(X, 3), output_size=(9, 9),
                                         kernel_size=3),
                   ("cols",), ("output_size", "kernel_size"), positional=3),
    "max_pool": Call(fastconv.max_pool, dict(x=X, kernel_size=3, stride=2), ("x",),
                     ("kernel_size", "stride"), positional=2, optional=("stride",)),
    "avg_pool": Call(fastconv.avg_pool, dict(x=X, kernel_size=3, stride=2), ("x",),
                     ("kernel_size", "stride"), positional=2, optional=("stride",)),
    "max_pool_backward": Call(fastconv.max_pool_backward,
                              dict(dy=np.ones(POOL_IDX.shape), indices=POOL_IDX,
                                   input_shape=X.shape),
                              ("dy",), ("input_shape",), positional=3),
    "avg_pool_backward": Call(fastconv.avg_pool_backward,
                              dict(dy=np.ones((2, 3, 4, 4)), input_shape=X.shape,
                                   kernel_size=3, stride=2),
                              ("dy",), ("input_shape", "kernel_size", "stride"), positional=3,
                              optional=("stride",)),
    "box_iou": Call(fastconv.box_iou, dict(a=BOXES, b=BOXES[:3]), ("a", "b"), positional=2),
    "box_convert": Call(fastconv.box_convert, dict(boxes=BOXES, in_fmt="xyxy", out_fmt="cxcywh"),
                        ("boxes",), positional=3),
    "nms": Call(fastconv.nms, dict(boxes=BOXES, scores=SCORES, iou_threshold=0.5),
                ("boxes", "scores"), reals=("iou_threshold",), positional=2),
    "batched_nms": Call(fastconv.batched_nms,
                        dict(boxes=BOXES, scores=SCORES, labels=LABELS, iou_threshold=0.5),
                        ("boxes", "scores"), reals=("iou_threshold",), positional=3),
    "soft_nms": Call(fastconv.soft_nms, dict(boxes=BOXES, scores=SCORES, sigma=0.5),
                     ("boxes", "scores"), reals=("sigma",), positional=2),
    "roi_align": Call(fastconv.roi_align, dict(x=X, rois=ROIS, output_size=2, spatial_scale=1.0,
                                               sampling_ratio=2),
                      ("x", "rois"), ("output_size",), ("spatial_scale",), positional=3),
    "roi_align_backward": Call(fastconv.roi_align_backward,
                               dict(dy=np.ones((2, 3, 2, 2)), rois=ROIS, input_shape=X.shape,
                                    spatial_scale=1.0, sampling_ratio=2),
                               ("dy", "rois"), ("input_shape",), ("spatial_scale",),
                               positional=3),
    "roi_pool": Call(fastconv.roi_pool, dict(x=X, rois=ROIS, output_size=2, spatial_scale=1.0),
                     ("x", "rois"), ("output_size",), ("spatial_scale",), positional=3),
    "roi_pool_backward": Call(fastconv.roi_pool_backward,
                              dict(dy=np.ones(ROI_IDX.shape), indices=ROI_IDX, rois=ROIS,
                                   input_shape=X.shape),
                              ("dy", "rois"), ("input_shape",), positional=4),
}


def _mutations() -> List[Tuple[str, str, str, Any, Tuple[type, ...]]]:
    """(op, argument, what, bad value, accepted exceptions)."""
    out = []
    for op, call in VALID.items():
        for name in call.arrays:
            good = call.args[name]
            out += [(op, name, "None", None, (TypeError,)),
                    (op, name, "list", np.asarray(good).tolist(), (TypeError,)),
                    (op, name, "int dtype", np.asarray(good).astype(np.int32), (TypeError,)),
                    (op, name, "string", "x", (TypeError,)),
                    (op, name, "0-d", np.float64(1.0), (TypeError, ValueError))]
        for name in call.sizes:
            good = call.args[name]
            dims = len(good) if isinstance(good, tuple) else None
            huge = 2**62 if dims is None else (2**62,) * dims
            if name not in call.optional:
                out.append((op, name, "None", None, (TypeError,)))
            out += [(op, name, "huge", huge, (ValueError, MemoryError)),
                    (op, name, "negative", -1 if dims is None else (-1,) * dims, (ValueError,)),
                    (op, name, "float", 1.5, (TypeError, ValueError)),
                    (op, name, "string", "3", (TypeError, ValueError))]
        for name in call.reals:
            out += [(op, name, "None", None, (TypeError,)),
                    (op, name, "nan", float("nan"), (ValueError,)),
                    (op, name, "string", "0.5", (TypeError,))]
    return out


MUTATIONS = _mutations()


@pytest.mark.parametrize("op", list(VALID))
def test_valid_calls_run(op: str) -> None:
    VALID[op].run()


@pytest.mark.parametrize("op, name, what, bad, errors", MUTATIONS,
                         ids=[f"{m[0]}-{m[1]}-{m[2]}" for m in MUTATIONS])
def test_bad_argument_raises_naming_it(op: str, name: str, what: str, bad: Any,
                                       errors: Tuple[type, ...]) -> None:
    with pytest.raises(errors) as caught:
        VALID[op].run(**{name: bad})
    message = str(caught.value)
    if caught.type is not MemoryError:
        assert name in message or name.replace("_", " ") in message, (
            f"{op}({name}={what}) raised {caught.type.__name__} without naming {name!r}: "
            f"{message}")


def test_every_public_op_is_in_the_table() -> None:
    # The benchmark's ops that are fastconv's array functions (not mAP or sliding windows).
    ops = {op for op in OPS if callable(getattr(fastconv, op, None))}
    assert len(ops) >= 17 and ops <= set(VALID), sorted(ops - set(VALID))
