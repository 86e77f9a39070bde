"""`summary(model, input_shape)`: per-layer output shapes, sizes, parameters and
multiply-adds from one forward pass, the numbers behind "why 1x1 bottlenecks" and "why
convolutions instead of dense layers"."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, List, Optional, Sequence, Tuple

import numpy as np

from ..tensor import Tensor, no_grad
from .convolutionalize import LinearAsConv
from .modules import BatchNormNd, Conv, Linear, Module, PoolNd

__all__ = ["LayerRow", "Summary", "summary"]


@dataclass(frozen=True)
class LayerRow:
    """One leaf layer: `output_shape` includes the batch dim (1); `activations` is the
    element count of one sample's output; `mult_adds` is per sample."""

    name: str
    type: str
    output_shape: Tuple[int, ...]
    activations: int
    params: int
    mult_adds: int


@dataclass(frozen=True)
class Summary:
    """What `summary` returns; `str()` gives the table with totals."""

    input_shape: Tuple[int, ...]
    rows: List[LayerRow]
    total_params: int
    trainable_params: int
    total_mult_adds: int

    @property
    def total_activations(self) -> int:
        return sum(row.activations for row in self.rows)

    def __str__(self) -> str:
        header = ("Layer", "Type", "Output shape", "Activations", "Params", "Mult-adds")
        body = [(row.name, row.type, str(tuple(row.output_shape)), f"{row.activations:,}",
                 f"{row.params:,}", f"{row.mult_adds:,}") for row in self.rows]
        widths = [max(len(line[i]) for line in [header] + body) for i in range(len(header))]

        def fmt(line: Sequence[str]) -> str:
            left = [line[i].ljust(widths[i]) for i in range(3)]
            right = [line[i].rjust(widths[i]) for i in range(3, 6)]
            return "  ".join(left + right).rstrip()

        rule = "-" * len(fmt(header))
        lines = [f"Input shape: {self.input_shape}", rule, fmt(header), rule]
        lines += [fmt(line) for line in body]
        lines += [rule,
                  f"Total params: {self.total_params:,} "
                  f"(trainable {self.trainable_params:,})",
                  f"Total mult-adds per sample: {self.total_mult_adds:,} "
                  f"({self.total_mult_adds / 1e6:.2f} M)",
                  f"Total activations per sample: {self.total_activations:,}"]
        return "\n".join(lines)


def _mult_adds(layer: Module, output_shape: Tuple[int, ...]) -> int:
    """Per-sample multiply-adds; layers whose cost is negligible next to conv/linear (pools,
    norms, activations) count 0, as in the textbook tables."""
    if isinstance(layer, Conv):
        out_channels, *out_spatial = output_shape[1:]
        per_output = layer.in_channels // layer.groups * math.prod(layer.kernel_size)
        return math.prod(out_spatial) * out_channels * per_output
    if isinstance(layer, LinearAsConv):
        return math.prod(output_shape[1:]) * layer.in_features
    if isinstance(layer, Linear):
        positions = math.prod(output_shape[1:-1])  # (N, *, out): one product per position
        return positions * layer.in_features * layer.out_features
    return 0


def _input_has_batch(model: Module, shape: Tuple[int, ...]) -> bool:
    """Whether `shape` already includes the batch dim: decided by the first layer whose
    input rank is fixed (conv, pool, batch norm); without one, `shape` is one sample."""
    for module in model.modules():
        if isinstance(module, (Conv, PoolNd)):
            return len(shape) == module.ndim + 2
        if isinstance(module, BatchNormNd) and len(module.ranks) == 1:
            return len(shape) == module.ranks[0]
    return False


def summary(model: Module, input_shape: Sequence[int],
            dtype: Any = np.float32) -> Summary:
    """Run one forward pass of a random (1, *input_shape) input through `model` (under
    no_grad, in eval mode; each module's training flag is restored) and tabulate every
    leaf layer.

    input_shape: one sample without the batch dim, e.g. (3, 32, 32); a full shape with a
    batch dim is also taken when the model's first conv/pool/norm layer shows it (its
    batch size is then replaced by 1). dtype: the input's dtype (the parameters' dtype,
    float32 unless the model was cast).
    """
    shape = tuple(int(n) for n in input_shape)
    if _input_has_batch(model, shape):
        shape = shape[1:]
    leaves = [(name, module) for name, module in model.named_modules()
              if not any(True for _ in module.children())]
    rows: List[Optional[LayerRow]] = [None] * len(leaves)

    def recorder(index: int, name: str) -> Any:
        def hook(module: Module, inputs: Tuple[Any, ...], output: Any) -> None:
            out_shape = tuple(int(n) for n in output.shape)
            rows[index] = LayerRow(
                name=name or type(module).__name__, type=type(module).__name__,
                output_shape=out_shape, activations=math.prod(out_shape[1:]),
                params=sum(p.data.size for p in module.parameters(recurse=False)),
                mult_adds=_mult_adds(module, out_shape))
        return hook

    handles = [module.register_forward_hook(recorder(i, name))
               for i, (name, module) in enumerate(leaves)]
    modes = [(module, module.training) for module in model.modules()]
    # A private generator: taking a summary must not shift fastconv.manual_seed's stream.
    x = Tensor(np.random.default_rng(0).standard_normal((1,) + shape).astype(dtype))
    try:
        model.eval()
        with no_grad():
            model(x)
    finally:
        for handle in handles:
            handle.remove()
        for module, mode in modes:
            object.__setattr__(module, "training", mode)
    # A leaf the forward never reached (e.g. an unused head) has no row.
    ran = [row for row in rows if row is not None]
    params = list(model.parameters())
    return Summary(
        input_shape=shape, rows=ran,
        total_params=sum(p.data.size for p in params),
        trainable_params=sum(p.data.size for p in params if p.requires_grad),
        total_mult_adds=sum(row.mult_adds for row in ran))
