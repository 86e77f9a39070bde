"""Intermediate activations by layer name: `get_layer(model, layer)` and
`layer_outputs(model, x, layers)`, what style transfer and the visualizations read from
a pretrained network.

A layer is named as `model.named_modules()` names it ("features.20", "_blocks.7",
"_blocks.7._bn1"); its activation is what the module returns. The forward pass stops
right after the last requested layer has run, so asking for early layers of a deep
network costs only those layers.
"""

from __future__ import annotations

from typing import Any, Dict, List, Sequence, Tuple, Union

from ..tensor import Tensor
from .modules import Module

__all__ = ["LayerSpec", "get_layer", "layer_outputs"]

LayerSpec = Union[str, Module]


class _Collected(Exception):
    """Raised by the last hook to end the forward pass early; caught in layer_outputs."""


def get_layer(model: Module, layer: LayerSpec) -> Tuple[str, Module]:
    """(name, module) of `layer` in `model`: a name from model.named_modules() ("" is the
    model itself) or one of its modules. ValueError naming close alternatives otherwise."""
    return _resolve(model, [layer])[0]


def _resolve(model: Module, layers: Sequence[LayerSpec]) -> List[Tuple[str, Module]]:
    """get_layer for several layers with one walk over the model."""
    if not isinstance(model, Module):
        raise TypeError(f"model must be a fastconv.nn.Module, got {type(model).__name__}")
    modules = dict(model.named_modules())
    names = {id(module): name for name, module in modules.items()}
    out = []
    for layer in layers:
        if isinstance(layer, Module):
            if id(layer) not in names:
                raise ValueError(f"layer {type(layer).__name__} is not a module of the "
                                 f"{type(model).__name__} model")
            out.append((names[id(layer)], layer))
        elif not isinstance(layer, str):
            raise TypeError(f"layer must be a module name (str) or a Module, got "
                            f"{type(layer).__name__}")
        elif layer in modules:
            out.append((layer, modules[layer]))
        else:
            parent = layer.rsplit(".", 1)[0] if "." in layer else ""
            near = [name for name in modules if name and name.startswith(parent)][:12]
            raise ValueError(f"{type(model).__name__} has no layer {layer!r}; layers are the "
                             f"names of model.named_modules(), e.g. {', '.join(near)}")
    return out


def layer_outputs(model: Module, x: Any, layers: Sequence[LayerSpec]) -> Dict[str, Tensor]:
    """Run `model(x)` and return {name: output} for each of `layers` (names or modules),
    stopping the forward pass once all have run. A module that runs several times in one
    pass (a shared activation) gives its first output. Gradients flow through the outputs
    as through any Tensor op (run under fastconv.no_grad() when none are needed).
    ValueError for unknown layers and for a layer the forward pass never reaches."""
    if isinstance(layers, (str, Module)):
        raise TypeError("layers must be a sequence of layer names or modules, not one")
    wanted = dict(_resolve(model, list(layers)))
    if not wanted:
        raise ValueError("layer_outputs: layers is empty")
    outputs: Dict[str, Tensor] = {}
    handles: List[Any] = []

    def hook_for(name: str) -> Any:
        def hook(module: Module, inputs: Tuple[Any, ...], output: Any) -> None:
            if name in outputs:
                return
            outputs[name] = output
            if len(outputs) == len(wanted):
                raise _Collected

        return hook

    try:
        for name, module in wanted.items():
            handles.append(module.register_forward_hook(hook_for(name)))
        model(x if isinstance(x, Tensor) else Tensor(x))
    except _Collected:
        pass
    finally:
        for handle in handles:
            handle.remove()
    missing = [name for name in wanted if name not in outputs]
    if missing:
        raise ValueError(f"layers {missing} did not run in {type(model).__name__}'s forward "
                         "pass")
    return outputs
