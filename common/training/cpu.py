"""CPU speed options for training and inference, as functions bundle configs can call.

Each option is measured by ``pocket profile`` (section "CPU speed options") on the machine at
hand; keep an option only where it measurably helps there. The options never change a state dict:
memory format and autocast are applied with tensor conversions and forward hooks, so checkpoints stay
interchangeable between machines with and without them. Hooks are not TorchScript-compatible: apply
them to the network used for training/inference, not to the one given to ``ckpt_export``.

Config use (every bundle's ``train.json`` and ``inference.json``, hence ``evaluate.json``; with
``"$import common.training.cpu"``)::

    "cpu_threads": "auto",
    "channels_last": true,
    "bf16": "auto",
    "network": "$common.training.cpu.optimize_for_cpu(@network_def.to(@device), channels_last=@channels_last,
                bf16=@bf16, num_threads=@cpu_threads)"

``optimize_for_cpu`` returns the network unchanged on a CUDA device (AMP there is MONAI's ``amp`` option).
Measured on a 2-core Xeon shared with other jobs (docs/benchmarks.md): threads ``auto`` (one thread
was 1.2-1.6x faster than two at load 3-4; on the idle machine two were 1.3-1.7x faster than one),
channels-last on (U-Net training and inference steps x1.13-1.22; the 2D bundles' networks x1.26-1.63;
a single 3D conv x1.22-1.45), bf16 only with native hardware support (emulated bf16 here: x0.28-0.43,
i.e. 2.3-3.6x slower).
"""

from __future__ import annotations

import functools
import os
import time
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from common.errors import InvalidInputError

__all__ = [
    "auto_threads",
    "autocast_forward",
    "bf16_support",
    "cpu_flags",
    "gemm_gflops",
    "conv_gflops",
    "optimize_for_cpu",
    "physical_cores",
    "set_threads",
    "to_channels_last",
    "use_channels_last",
]

# CPU flags with native bf16 arithmetic; without them oneDNN emulates bf16 with conversions (slower than fp32)
NATIVE_BF16_FLAGS = ("avx512_bf16", "amx_bf16", "avx_ne_convert")


def cpu_flags() -> set[str]:
    """Flags of the first CPU in ``/proc/cpuinfo`` (empty off Linux): what the hardware can do natively."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("flags"):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def bf16_support() -> dict[str, bool]:
    """Can bf16 run (``mkldnn_bf16``: oneDNN kernels exist) and is it native (``native``: hardware flags)?

    oneDNN runs bf16 on any AVX-512 CPU, but without ``avx512_bf16``/AMX it converts to fp32 and back, so
    only ``native`` predicts a speed-up; ``common.benchmarks.profile`` measures it anyway.
    """
    mkldnn = bool(torch.backends.mkldnn.is_available())
    try:
        mkldnn_bf16 = mkldnn and bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        mkldnn_bf16 = False
    flags = cpu_flags()
    return {
        "mkldnn": mkldnn,
        "mkldnn_bf16": mkldnn_bf16,
        "native": mkldnn_bf16 and any(f in flags for f in NATIVE_BF16_FLAGS),
    }


def physical_cores() -> int:
    """Cores this process may run on (affinity mask), as the default thread count."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def auto_threads(cores: int | None = None) -> int:
    """Threads for the cores other processes leave idle: ``cores - 1-minute load average``, at least 1.

    On a machine shared with other jobs (load above the core count) OpenMP threads that wait for a
    descheduled sibling at every barrier make two threads slower than one; measured on a 2-core machine
    at load 7: one thread 2.2x faster per training step. On an idle machine this is every core.
    """
    cores = cores or physical_cores()
    try:
        load = os.getloadavg()[0]
    except (AttributeError, OSError):  # no load average (Windows)
        return cores
    return max(1, min(cores, int(cores - load + 0.5)))


def set_threads(num_threads: int | str | None = None, interop_threads: int | None = None) -> dict[str, int]:
    """Set intra-op (and, once per process, inter-op) threads; ``None`` keeps torch's choice (one per core),
    ``"auto"`` uses ``auto_threads()`` unless ``OMP_NUM_THREADS`` is set (an explicit choice wins).

    Returns the settings in force, so a config can log them. ``set_num_interop_threads`` raises once any
    parallel work ran; that case is skipped silently because the intra-op count is the one that matters
    for convolutions.
    """
    if num_threads == "auto":
        num_threads = None if os.environ.get("OMP_NUM_THREADS") else auto_threads()
    if num_threads is not None:
        torch.set_num_threads(int(num_threads))
    if interop_threads is not None:
        try:
            torch.set_num_interop_threads(int(interop_threads))
        except RuntimeError:
            pass
    return {"num_threads": torch.get_num_threads(), "interop_threads": torch.get_num_interop_threads()}


def _memory_format(t: torch.Tensor) -> torch.memory_format | None:
    """channels-last format for a 4-D (2D images) or 5-D (3D volumes) tensor, else ``None``."""
    return {4: torch.channels_last, 5: torch.channels_last_3d}.get(t.dim())


def to_channels_last(x: Any) -> Any:
    """``x`` (a tensor, or a list/tuple/dict of them) in channels-last layout; other dims are untouched."""
    if isinstance(x, torch.Tensor):
        fmt = _memory_format(x)
        return x if fmt is None else x.contiguous(memory_format=fmt)
    if isinstance(x, (list, tuple)):
        return type(x)(to_channels_last(v) for v in x)
    if isinstance(x, dict):
        return {k: to_channels_last(v) for k, v in x.items()}
    return x


def _channels_last_pre_hook(module: nn.Module, args: tuple) -> tuple:
    return to_channels_last(args)


def use_channels_last(net: nn.Module) -> nn.Module:
    """Store conv weights and convert inputs to channels-last (NDHWC) so oneDNN skips re-ordering.

    In place; returns ``net``. Parameters keep their shapes, so ``load_state_dict`` and checkpoints work
    as before (``copy_`` keeps the layout). The input conversion is a forward pre-hook; outputs come back
    channels-last, which every PyTorch/MONAI op accepts.
    """
    with torch.no_grad():
        for p in net.parameters():
            fmt = _memory_format(p)
            if fmt is not None:
                p.data = p.data.contiguous(memory_format=fmt)
    net.register_forward_pre_hook(_channels_last_pre_hook)
    return net


def _to_float(x: Any) -> Any:
    """Low-precision floating tensors back to fp32 (so losses and metrics run in fp32)."""
    if isinstance(x, torch.Tensor):
        return x.float() if x.is_floating_point() and x.dtype != torch.float32 else x
    if isinstance(x, (list, tuple)):
        return type(x)(_to_float(v) for v in x)
    if isinstance(x, dict):
        return {k: _to_float(v) for k, v in x.items()}
    return x


def _autocast_enter(stack: list, device_type: str, dtype: torch.dtype, module: nn.Module, args: tuple) -> None:
    ctx = torch.autocast(device_type, dtype=dtype)
    ctx.__enter__()
    stack.append(ctx)


def _autocast_exit(stack: list, module: nn.Module, args: tuple, output: Any) -> Any:
    if stack:
        stack.pop().__exit__(None, None, None)
    return _to_float(output)


def autocast_forward(net: nn.Module, dtype: torch.dtype = torch.bfloat16, device_type: str = "cpu") -> nn.Module:
    """Run ``net``'s forward under ``torch.autocast(device_type, dtype)``; outputs are cast back to fp32.

    MONAI's engines only autocast on CUDA (their ``amp`` option), hence this hook pair (in place; returns
    ``net``). Backward follows autocast's casts; weights, gradients and the optimizer stay fp32.
    """
    stack: list = []
    net.register_forward_pre_hook(functools.partial(_autocast_enter, stack, device_type, dtype))
    net.register_forward_hook(functools.partial(_autocast_exit, stack), always_call=True)
    return net


def optimize_for_cpu(
    net: nn.Module,
    channels_last: bool = False,
    bf16: bool | str = "auto",
    num_threads: int | str | None = None,
) -> nn.Module:
    """Apply the CPU options to ``net`` (in place; returns it); a no-op for a network on a GPU.

    Args:
        channels_last: NDHWC (NHWC in 2D) weights and inputs, so oneDNN skips re-ordering; the bundle
            configs turn it on (measured 1.1-1.6x faster per step here; docs/benchmarks.md).
        bf16: ``True``/``False``, or ``"auto"``: only where the CPU has native bf16 (``bf16_support``);
            emulated bf16 is several times slower than fp32.
        num_threads: intra-op threads; ``None`` keeps torch's default (one per core), ``"auto"`` leaves
            out the cores other jobs keep busy (``auto_threads``).
    """
    param = next(net.parameters(), None)
    if param is not None and param.device.type != "cpu":
        return net
    if num_threads is not None:
        set_threads(num_threads)
    if channels_last:
        use_channels_last(net)
    use_bf16 = bf16_support()["native"] if bf16 == "auto" else bool(bf16)
    if use_bf16:
        autocast_forward(net, torch.bfloat16, "cpu")
    return net


def _median_time(fn: Callable[[], Any], repeats: int = 5, warmup: int = 1) -> float:
    """Median seconds of ``fn()`` after ``warmup`` untimed calls."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    times.sort()
    return times[len(times) // 2]


def gemm_gflops(n: int = 2048, repeats: int = 5, dtype: torch.dtype = torch.float32) -> float:
    """GFLOP/s of an ``n x n`` matrix product (MKL): the practical peak the conv figures are compared to."""
    a = torch.randn(n, n).to(dtype)
    b = torch.randn(n, n).to(dtype)
    t = _median_time(lambda: a @ b, repeats)
    return 2 * n**3 / t / 1e9


def conv_gflops(
    channels: int = 32,
    size: int = 64,
    layout: str = "channels_last",
    dtype: torch.dtype | None = None,
    repeats: int = 5,
) -> float:
    """GFLOP/s of one 3x3x3 ``channels -> channels`` 3D convolution (forward, batch 1, ``size``^3).

    ``layout``: ``channels_last`` or ``contiguous``; ``dtype``: ``torch.bfloat16`` runs it under autocast.
    """
    conv = nn.Conv3d(channels, channels, 3, padding=1)
    x = torch.randn(1, channels, size, size, size)
    if layout == "channels_last":
        conv = conv.to(memory_format=torch.channels_last_3d)
        x = x.contiguous(memory_format=torch.channels_last_3d)
    elif layout != "contiguous":
        raise InvalidInputError(f"layout must be 'channels_last' or 'contiguous', got {layout!r}.")
    macs = size**3 * 27 * channels * channels

    def run() -> None:
        with torch.no_grad(), torch.autocast("cpu", dtype=dtype or torch.bfloat16, enabled=dtype is not None):
            conv(x)

    return 2 * macs / _median_time(run, repeats) / 1e9
