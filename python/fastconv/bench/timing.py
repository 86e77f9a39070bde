"""Where the benchmark runs: one `Device` per kind ("cpu", "cuda") with its arrays, its
PyTorch glue, its timer and its roofs.

- cpu: NumPy arrays; torch tensors share their memory (torch.from_numpy) and run with
  fastconv's OpenMP thread count. Wall-clock medians: one untimed warm-up call, then calls
  until the mode's time budget or repetition cap. Roofs: the float32 FMA peak of all
  threads and the copy bandwidth of a NumPy copy.
- cuda: CuPy arrays; torch tensors share the device memory through DLPack (zero copy,
  checked), with TF32 off (float32 is float32 on both sides) and cudnn.benchmark on. Each
  call is bracketed by CUDA events on its stream after warm-up calls; the median is taken.
  Roof: the device-to-device copy bandwidth (cudaMemcpy, bytes read + written).
"""

from __future__ import annotations

import math
import os
import platform
import statistics
import time
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np

import fastconv
from .._backend import measure_fma_peak

# CPU: per-call time budget in seconds and repetition cap, per mode.
CPU_BUDGETS = {"smoke": (0.01, 3), "quick": (0.1, 20), "full": (0.3, 50)}
# The NumPy reference runs seconds on the big layers: it gets a smaller share.
NUMPY_BUDGET_SHARE = 0.5
# Seconds of the FMA-peak probe and megabytes of the copy-bandwidth probe, per mode.
CPU_ROOF_PROBES = {"smoke": (0.05, 32), "quick": (0.3, 256), "full": (0.5, 256)}
# OpenBLAS worker threads (behind NumPy's tensordot/einsum) keep spinning for up to ~100 ms
# after a call and would steal the cores from the next case: let them go idle first.
SETTLE_SECONDS = 0.25
# GPU: (warm-up calls, seconds of timed calls, fewest and most timed calls) per mode.
GPU_TIMING = {"smoke": (1, 0.0, 2, 2), "quick": (3, 0.2, 5, 30), "full": (3, 0.3, 10, 50)}
GPU_COPY_BYTES = 1 << 30


class DeviceUnavailable(RuntimeError):
    """The benchmark cannot run on this device here (no CUDA device, _cuda or CuPy)."""


def wall_clock(fn: Callable[[], Any], budget: float, max_reps: int,
               slow_warmup_counts: bool = False) -> Tuple[float, int, Any]:
    """Median seconds per call of `fn`, the number of timed calls, and the last result.

    One warm-up call, then calls until `budget` seconds or `max_reps` calls. With
    `slow_warmup_counts`, a warm-up call that alone exceeds the budget is the single
    sample, so a reference taking seconds runs once; kernels always get a timed call,
    since their first call also starts the thread pool.
    """
    start = time.perf_counter()
    result = fn()
    first = time.perf_counter() - start
    if slow_warmup_counts and first >= budget:
        return first, 1, result
    samples: List[float] = []
    spent = 0.0
    while len(samples) < max_reps and (spent < budget or not samples):
        result = None  # let the host cache reuse the previous output's memory
        start = time.perf_counter()
        result = fn()
        samples.append(time.perf_counter() - start)
        spent += samples[-1]
    return statistics.median(samples), len(samples), result


def measure_copy_bandwidth(megabytes: int, repeats: int = 5) -> float:
    """GB/s (bytes read + written) of the best of `repeats` NumPy copies of `megabytes` MB
    between two buffers that are already paged in, as a DRAM roof for memory-bound ops."""
    src = np.ones(megabytes * 2**20 // 4, dtype=np.float32)
    dst = np.zeros_like(src)
    best = math.inf
    for _ in range(repeats):
        start = time.perf_counter()
        np.copyto(dst, src)
        best = min(best, time.perf_counter() - start)
    return 2.0 * src.nbytes / best / 1e9


def measure_roofs(mode: str) -> Tuple[float, float]:
    """(float32 FMA peak in GFLOP/s on all fastconv threads, copy bandwidth in GB/s)."""
    seconds, megabytes = CPU_ROOF_PROBES[mode]
    measure_fma_peak(seconds / 4)  # wakes the threads and the clocks up
    return measure_fma_peak(seconds), measure_copy_bandwidth(megabytes)


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


class Device:
    """One place to run cases: arrays, torch tensors on the same memory, a timer, roofs."""

    name = ""
    flop_unit = ("GFLOP/s", 1e9)

    def __init__(self, mode: str, use_torch: bool) -> None:
        self.mode = mode
        self.torch: Any = None
        self.torch_note = "disabled (--no-torch)"
        if use_torch:
            self._import_torch()
        self.fma_peak: Optional[float] = None  # GFLOP/s, where measured
        self.copy_gbps: Optional[float] = None

    def _import_torch(self) -> None:
        try:
            import torch
        except ImportError:
            self.torch_note = "not installed"
            return
        self.torch = torch
        self.torch_note = torch.__version__

    def unit(self, unit: str) -> str:
        """The display unit of a problem's work unit ("flop", "byte")."""
        return {"flop": self.flop_unit[0], "byte": "GB/s"}.get(unit, "")

    def scale(self, unit: str) -> float:
        return {"flop": self.flop_unit[1], "byte": 1e9}.get(unit, 1.0)

    def roof(self, unit: str) -> Optional[float]:
        """The roof of a work unit in its display unit, where measured."""
        return {"flop": self.fma_peak, "byte": self.copy_gbps}.get(unit)

    # -- to implement per device
    def put(self, a: Any) -> Any:
        raise NotImplementedError

    def to_host(self, a: Any) -> np.ndarray:
        raise NotImplementedError

    def to_torch(self, a: Any) -> Any:
        raise NotImplementedError

    def time(self, fn: Callable[[], Any], framework: str) -> Tuple[float, int, Any]:
        raise NotImplementedError

    def settle(self) -> None:
        """Between cases: let the machine go quiet and give cached memory back."""

    def header(self) -> Dict[str, Any]:
        raise NotImplementedError


class CpuDevice(Device):
    name = "cpu"

    def __init__(self, mode: str, use_torch: bool) -> None:
        super().__init__(mode, use_torch)
        self.threads = int(fastconv.info(as_dict=True)["threads"])
        if self.torch is not None:
            # Same core count for both: otherwise the comparison measures thread counts.
            self.torch.set_num_threads(self.threads)
        self.fma_peak, self.copy_gbps = measure_roofs(mode)

    def put(self, a: Any) -> Any:
        return a

    def to_host(self, a: Any) -> np.ndarray:
        return np.asarray(a.detach().numpy() if hasattr(a, "detach") else a)

    def to_torch(self, a: Any) -> Any:
        return self.torch.from_numpy(a) if isinstance(a, np.ndarray) else a

    def time(self, fn: Callable[[], Any], framework: str) -> Tuple[float, int, Any]:
        budget, max_reps = CPU_BUDGETS[self.mode]
        if framework == "numpy":
            return wall_clock(fn, budget * NUMPY_BUDGET_SHARE, max_reps,
                              slow_warmup_counts=True)
        return wall_clock(fn, budget, max_reps)

    def settle(self) -> None:
        time.sleep(SETTLE_SECONDS)

    def header(self) -> Dict[str, Any]:
        details = fastconv.info(as_dict=True)
        return {
            "device": f"{cpu_model()}, {os.cpu_count()} cores",
            "cpu": cpu_model(),
            "cores": os.cpu_count(),
            "cpu_path": details["cpu_path"],
            "threads": details["threads"],
            "torch_threads": self.torch.get_num_threads() if self.torch is not None else None,
            "fma_peak_gflops": self.fma_peak,
            "copy_gbps": self.copy_gbps,
        }


class CudaDevice(Device):
    name = "cuda"
    flop_unit = ("TFLOP/s", 1e12)

    def __init__(self, mode: str, use_torch: bool) -> None:
        if not fastconv.cuda.is_available():
            raise DeviceUnavailable(fastconv.cuda.reason())
        import cupy

        self.cupy = cupy
        self.torchvision_note = "not available"
        super().__init__(mode, use_torch)
        self.copy_gbps = self._copy_bandwidth()

    def _import_torch(self) -> None:
        super()._import_torch()
        torch = self.torch
        if torch is None:
            return
        if not torch.cuda.is_available():
            self.torch, self.torch_note = None, f"{torch.__version__} without CUDA here"
            return
        torch.backends.cudnn.allow_tf32 = False
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.benchmark = True
        try:
            import torchvision

            self.torchvision_note = torchvision.__version__
        except ImportError:
            pass

    def put(self, a: Any) -> Any:
        return self.cupy.asarray(a) if isinstance(a, np.ndarray) else a

    def to_host(self, a: Any) -> np.ndarray:
        if hasattr(a, "detach"):
            return a.detach().cpu().numpy()
        return self.cupy.asnumpy(a)

    def to_torch(self, a: Any) -> Any:
        """The same memory as a torch tensor (DLPack: no copy)."""
        if not isinstance(a, self.cupy.ndarray):
            return a
        t = self.torch.from_dlpack(a)
        if a.size and t.data_ptr() != a.data.ptr:
            raise RuntimeError("DLPack made a copy; the comparison would not be fair")
        return t

    def synchronize(self) -> None:
        self.cupy.cuda.get_current_stream().synchronize()
        if self.torch is not None:
            self.torch.cuda.synchronize()

    def time(self, fn: Callable[[], Any], framework: str) -> Tuple[float, int, Any]:
        warmup, budget, min_reps, max_reps = GPU_TIMING[self.mode]
        result = None
        for _ in range(warmup):
            result = fn()
        self.synchronize()
        samples: List[float] = []
        while len(samples) < min_reps or (sum(samples) < budget and len(samples) < max_reps):
            result = None  # let the pool reuse the previous output's memory
            seconds, result = self._time_one(fn, framework)
            samples.append(seconds)
        return statistics.median(samples), len(samples), result

    def _time_one(self, fn: Callable[[], Any], framework: str) -> Tuple[float, Any]:
        if framework == "torch":
            cuda = self.torch.cuda
            begin, end = cuda.Event(enable_timing=True), cuda.Event(enable_timing=True)
            begin.record()
            result = fn()
            end.record()
            end.synchronize()
            return begin.elapsed_time(end) / 1e3, result
        begin, end = self.cupy.cuda.Event(), self.cupy.cuda.Event()
        begin.record()
        result = fn()
        end.record()
        end.synchronize()
        return self.cupy.cuda.get_elapsed_time(begin, end) / 1e3, result

    def _copy_bandwidth(self) -> float:
        nbytes = GPU_COPY_BYTES if self.mode != "smoke" else 1 << 24
        seconds = self._time_device_copy(nbytes)
        self.settle()  # the buffers died with _time_device_copy's frame
        return 2.0 * nbytes / seconds / 1e9

    def _time_device_copy(self, nbytes: int) -> float:
        src = self.cupy.empty(nbytes // 4, dtype=self.cupy.float32)
        src[...] = 1.5  # never time on untouched memory
        dst = self.cupy.empty_like(src)
        # cudaMemcpyAsync on the current stream: the copy engine's rate, no kernel of ours.
        return self.time(lambda: dst.data.copy_from_device_async(src.data, nbytes),
                         "fastconv")[0]

    def settle(self) -> None:
        """Give cached device memory back between cases (big ones follow small ones)."""
        self.cupy.get_default_memory_pool().free_all_blocks()
        if self.torch is not None:
            self.torch.cuda.empty_cache()

    def header(self) -> Dict[str, Any]:
        cupy = self.cupy
        props = cupy.cuda.runtime.getDeviceProperties(cupy.cuda.Device().id)
        name = props["name"]
        name = name.decode() if isinstance(name, bytes) else str(name)
        head = {
            "device": f"{name}, sm {props['major']}.{props['minor']}, "
                      f"{props['multiProcessorCount']} SMs, "
                      f"{props['totalGlobalMem'] / 2**30:.1f} GiB, driver "
                      f"{cupy.cuda.runtime.driverGetVersion()}",
            "gpu": name,
            "compute_capability": f"{props['major']}.{props['minor']}",
            "cupy": cupy.__version__,
            "cuda_build": fastconv.info(as_dict=True)["cuda_build"],
            "torchvision": self.torchvision_note,
            "copy_gbps": self.copy_gbps,
        }
        if self.torch is not None:
            head["cudnn"] = self.torch.backends.cudnn.version()
        return head


DEVICE_TYPES = {"cpu": CpuDevice, "cuda": CudaDevice}


def open_device(name: str, mode: str, use_torch: bool) -> Device:
    """The device `name` ("cpu" or "cuda") set up for `mode`; DeviceUnavailable if it
    cannot run here."""
    return DEVICE_TYPES[name](mode, use_torch)


def as_float64(inputs: Sequence[Any]) -> Tuple[Any, ...]:
    """Float host arrays upcast to float64 (the precision references are evaluated in)."""
    return tuple(a.astype(np.float64) if isinstance(a, np.ndarray) and a.dtype.kind == "f"
                 else a for a in inputs)
