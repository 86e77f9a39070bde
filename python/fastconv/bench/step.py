"""One training step of a network in fastconv or in its plain-torch twin, the same way in
both: shared by the training benchmark (`fastconv.bench.train`) and by its memory
measurement, which runs this file as a script in a fresh process per framework:

    python .../fastconv/bench/step.py FRAMEWORK ARCH DATA.npz STEPS THREADS

FRAMEWORK is "fastconv" or "torch", ARCH a `fastconv.models` name, DATA.npz holds the
weights ("state.<state-dict key>"), the input batch "x" and the integer labels "y". The
script prints one JSON object of resident-set sizes in MiB: "base_mib" (VmRSS after the
imports, the model, its weights and the data, before the first step), "step_mib" (the
peak VmRSS during STEPS steps above base: the high-water mark is reset right before the
first step) and "peak_mib" (the whole process: the larger high-water mark, of the set-up or
of the steps), plus "torch_imported". Not ru_maxrss: Linux carries the parent's peak RSS
over into a child across fork and exec, so it would report the parent's size.

It runs by path, not with `-m`, so that the torch child never imports the fastconv package
(whose memory would count against torch): only the twins' file is loaded, and that needs
torch alone. The fastconv child never imports torch.
"""

from __future__ import annotations

import gc
import importlib.util
import json
import sys
from pathlib import Path
from typing import Any, Callable, Dict, Mapping, Optional, Sequence, Tuple

import numpy as np

FRAMEWORKS = ("fastconv", "torch")
# The same optimizer in both frameworks (torch.optim.SGD's defaults otherwise: dampening 0,
# no Nesterov; its for-loop implementation, torch's choice for CPU tensors).
LR = 0.01
MOMENTUM = 0.9
WEIGHT_DECAY = 1e-4
TWINS_FILE = Path(__file__).resolve().parent.parent / "models" / "torch_twins.py"


def load_twins() -> Mapping[str, Callable[[], Any]]:
    """torch_twins.TWINS read from its file, without importing the fastconv package."""
    spec = importlib.util.spec_from_file_location("torch_twins", TWINS_FILE)
    assert spec is not None and spec.loader is not None, TWINS_FILE
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.TWINS


def build(framework: str, arch: str, state: Mapping[str, np.ndarray],
          twins: Optional[Mapping[str, Callable[[], Any]]] = None) -> Tuple[Any, Any]:
    """(model, SGD optimizer) for `arch` in `framework`, in training mode, with the weights
    and buffers of `state` loaded strictly (a missing or renamed key would mean the twin is
    not the same network). Dropout is switched off in both (p = 0) so the two compute the
    same function; BatchNorm trains on batch statistics. `twins` (torch only): the TWINS
    table of fastconv.models.torch_twins."""
    if framework == "fastconv":
        from fastconv import models, nn, optim

        model = getattr(models, arch)()
        model.load_state_dict(state, strict=True)
        dropout, sgd = nn.Dropout, optim.SGD
    elif framework == "torch":
        import torch

        if twins is None:
            raise ValueError("build: the torch framework needs the twins table")
        model = twins[arch]()
        model.load_state_dict({k: torch.from_numpy(np.ascontiguousarray(v))
                               for k, v in state.items()}, strict=True)
        dropout, sgd = torch.nn.Dropout, torch.optim.SGD
    else:
        raise ValueError(f"framework must be one of {FRAMEWORKS}, got {framework!r}")
    model.train()
    for module in model.modules():
        if isinstance(module, dropout):
            module.p = 0.0
    optimizer = sgd(model.parameters(), lr=LR, momentum=MOMENTUM, weight_decay=WEIGHT_DECAY)
    return model, optimizer


def stepper(framework: str, model: Any, optimizer: Any, x: np.ndarray,
            y: np.ndarray) -> Callable[[], float]:
    """A function that takes one training step on the batch `x` (N, C, *spatial) float32
    with labels `y` (N,) int64: zero_grad, forward, mean cross-entropy, backward, optimizer
    step; it returns the loss before the update."""
    if framework == "fastconv":
        import fastconv
        from fastconv.nn import functional

        inputs, labels, loss_fn = fastconv.Tensor(x), y, functional.cross_entropy
    else:
        import torch

        inputs, labels = torch.from_numpy(x), torch.from_numpy(y)
        loss_fn = torch.nn.functional.cross_entropy

    def step() -> float:
        optimizer.zero_grad()
        loss = loss_fn(model(inputs), labels)
        loss.backward()
        optimizer.step()
        return float(loss.item())

    return step


def save_data(path: Path, state: Mapping[str, np.ndarray], x: np.ndarray,
              y: np.ndarray) -> None:
    """Write what a child process needs (see the module docstring) to `path` (.npz)."""
    np.savez(path, x=x, y=y, **{f"state.{k}": v for k, v in state.items()})


def _status_mib(field: str) -> float:
    """A memory line of /proc/self/status ("VmRSS", "VmHWM"), in MiB."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    raise RuntimeError(f"no {field} in /proc/self/status")


def measure(framework: str, arch: str, data: Path, steps: int, threads: int) -> Dict[str, Any]:
    """Memory of `steps` training steps in this process (see the module docstring)."""
    twins = None
    if framework == "torch":
        import torch

        torch.set_num_threads(threads)
        twins = load_twins()
    with np.load(data) as npz:
        state = {k[len("state."):]: npz[k] for k in npz.files if k.startswith("state.")}
        x, y = npz["x"], npz["y"]
    model, optimizer = build(framework, arch, state, twins)
    step = stepper(framework, model, optimizer, x, y)
    # `state` stays alive until the end: freed, its pages could serve the steps unseen.
    gc.collect()
    base, setup_peak = _status_mib("VmRSS"), _status_mib("VmHWM")
    # "5" resets the high-water mark to the current RSS (Linux >= 4.0), so VmHWM after the
    # steps is the peak of the steps alone, not of model construction.
    with open("/proc/self/clear_refs", "w") as clear:
        clear.write("5")
    for _ in range(steps):
        step()
    step_peak = _status_mib("VmHWM")
    return {"base_mib": base, "step_mib": step_peak - base,
            "peak_mib": max(setup_peak, step_peak), "torch_imported": "torch" in sys.modules}


def main(argv: Sequence[str]) -> None:
    """The child: FRAMEWORK ARCH DATA.npz STEPS THREADS; prints measure()'s JSON."""
    framework, arch, data, steps, threads = argv
    print(json.dumps(measure(framework, arch, Path(data), int(steps), int(threads))))


if __name__ == "__main__":
    # Python put this file's folder first on sys.path; its modules (models, timing, ...)
    # must not shadow top-level packages of the same name.
    sys.path.pop(0)
    main(sys.argv[1:])
