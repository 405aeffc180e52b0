"""Measurements of ``common.benchmarks.profile``, each meant to run in a fresh process (one per configuration).

A fresh process per configuration makes CPU peak memory meaningful. With the network built, one
forward/backward on a tiny input pages in the math libraries' code (else ~200 MiB of shared-library pages
land in every figure), glibc is told to return freed memory to the OS (``precise_malloc``), and the peak
resident set size (Linux ``VmHWM``) is reset to the current RSS (``/proc/self/clear_refs``). Then
``step peak = VmHWM after the warm-up steps - VmRSS before`` is what training adds to the built network:
the batch, activations, gradients, Adam state and workspace (at least two steps: Adam's state exists
from the second on). The timed steps follow with glibc's usual heap reuse (``fast_malloc``). Where the
reset is not available, ``ru_maxrss - RSS before`` is used, which can only over-estimate. On CUDA:
``torch.cuda.max_memory_allocated`` after ``reset_peak_memory_stats`` (absolute) and the same minus
``memory_allocated`` before the work (step peak).

MACs are counted by ``common.benchmarks.complexity.count_macs`` on the ``meta`` device (shapes only, nothing is
computed or allocated), rules ``"forward"`` and ``"forward_backward"``: ``torch.utils.flop_counter`` FLOPs / 2,
convolutions (transposed included) and matrix products only. Backward counts the convolution gradients
actually computed (no input gradient for the image).
"""

from __future__ import annotations

import copy
import ctypes
import gc
import math
import os
import resource
import statistics
import time
import traceback
from collections.abc import Callable, Sequence
from typing import Any

import torch
from monai.inferers import SlidingWindowInferer
from torch import nn

from common.benchmarks.complexity import count_macs, sum_outputs
from common.losses import loss_for_arch
from common.networks import count_parameters, get_network
from common.training import cpu as perf

MIB = 2**20
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # glibc mallopt parameters
__all__ = [
    "build_network",
    "depth_for_patch",
    "measure_infer",
    "measure_speed",
    "measure_train",
    "network_stats",
    "run_config",
]


def depth_for_patch(patch: Sequence[int]) -> int:
    """Down-sampling steps for a patch, as the bundles compute it: ``log2(min(patch) / 4)``."""
    return int(math.log2(min(patch) / 4))


def build_network(arch: str, pocket: bool, patch: Sequence[int], init_filters: int = 32) -> nn.Module:
    """The profiled network: 3D, 1 input channel, 2 classes, depth from the patch."""
    return get_network(arch, 3, 1, 2, init_filters=init_filters, depth=depth_for_patch(patch), pocket=pocket)


def network_stats(arch: str, pocket: bool, patch: Sequence[int], init_filters: int = 32) -> dict[str, int]:
    """Parameters, forward MACs and training (forward + backward) MACs for one image of ``patch`` size."""
    with torch.device("meta"):
        net = build_network(arch, pocket, patch, init_filters)
    shape = (1, *patch)
    return {"params": count_parameters(net), "macs_forward": count_macs(net, shape, "forward"),
            "macs_train": count_macs(net, shape, "forward_backward")}


# ---------------------------------------------------------------- process memory (Linux /proc, resource)


def _status_kib(field: str) -> int | None:
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def rss_mib() -> float | None:
    """Current resident set size of this process."""
    kib = _status_kib("VmRSS")
    return None if kib is None else kib / 1024


def peak_rss_mib() -> float:
    """Peak resident set size (``VmHWM``, else ``ru_maxrss``) of this process."""
    kib = _status_kib("VmHWM")
    if kib is None:
        kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    return kib / 1024


def reset_peak_rss() -> bool:
    """Reset ``VmHWM`` to the current RSS (Linux >= 4.0); ``False`` where that is not possible."""
    try:
        with open("/proc/self/clear_refs", "w", encoding="ascii") as f:
            f.write("5")
        return True
    except OSError:
        return False


def precise_malloc() -> bool:
    """Make glibc return freed memory to the OS, so RSS follows live memory (glibc only; else ``False``).

    By default glibc raises its mmap threshold after large frees and keeps freed heap memory: a warm-up
    would then pre-pay memory that the measured step reuses without raising the RSS. A fixed 128 KiB mmap
    threshold (every tensor of note is mapped and unmapped) and ``malloc_trim`` before the baseline
    make ``peak RSS - baseline RSS`` the memory the step itself needs.
    """
    try:
        libc = ctypes.CDLL("libc.so.6")
        ok = libc.mallopt(_M_MMAP_THRESHOLD, 128 * 1024) == 1 and libc.mallopt(_M_TRIM_THRESHOLD, 128 * 1024) == 1
        libc.malloc_trim(0)
        return ok
    except (OSError, AttributeError):
        return False


def fast_malloc() -> None:
    """After the memory steps: glibc's steady state after warm-up (tensors below 32 MiB reuse heap
    memory), so the timed steps do not page-fault fresh memory for every activation."""
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt(_M_MMAP_THRESHOLD, 32 * 2**20)
        libc.mallopt(_M_TRIM_THRESHOLD, 64 * 2**20)
    except (OSError, AttributeError):
        pass


def limit_address_space(extra_bytes: int | None) -> None:
    """Let this process map at most ``extra_bytes`` more virtual memory, so an over-large configuration
    fails with an allocation error inside it instead of waking the OOM killer on a shared machine."""
    if not extra_bytes:
        return
    size_kib = _status_kib("VmSize")
    if size_kib is None:
        return
    limit = size_kib * 1024 + int(extra_bytes)
    _, hard = resource.getrlimit(resource.RLIMIT_AS)
    if hard != resource.RLIM_INFINITY:
        limit = min(limit, hard)
    resource.setrlimit(resource.RLIMIT_AS, (limit, hard))


class _Memory:
    """Peak memory of a block of work, relative to the moment ``start`` is called."""

    def __init__(self, device: torch.device):
        self.device = device
        self.method = ""
        self.base = 0.0

    def start(self) -> None:
        gc.collect()
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            self.base = torch.cuda.memory_allocated(self.device) / MIB
            self.method = "cuda max_memory_allocated"
        else:
            trimmed = precise_malloc()
            self.method = "VmHWM (reset)" if reset_peak_rss() else "ru_maxrss"
            self.method += ", malloc trimmed" if trimmed else ""
            self.base = rss_mib() or 0.0

    def stop(self) -> dict[str, float | str]:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            peak = torch.cuda.max_memory_allocated(self.device) / MIB
        else:
            peak = peak_rss_mib()
        return {"baseline_mib": self.base, "peak_mib": peak, "delta_mib": peak - self.base,
                "memory_method": self.method}


# ---------------------------------------------------------------- building blocks


def _device(name: str) -> torch.device:
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    return torch.device(name)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _prepare(net: nn.Module, device: torch.device, channels_last: bool, bf16: bool) -> nn.Module:
    net = net.to(device)
    if channels_last:
        perf.use_channels_last(net)
    if bf16:
        perf.autocast_forward(net, torch.bfloat16, device.type)
    return net


def _batch(batch: int, patch: Sequence[int], device: torch.device, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """A fixed image batch and a binary label map (the same for every network)."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, 1, *patch, generator=g)
    y = (torch.rand(batch, 1, *patch, generator=g) > 0.7).float()
    return x.to(device), y.to(device)


def _page_in(net: nn.Module, arch: str, patch: Sequence[int], device: torch.device) -> None:
    """Run forward + backward once on the smallest valid input at batch 1 and 2, then drop the gradients.

    Math-library code (MKL, oneDNN; each batch size picks other kernels) is paged in on first use and
    counts in the resident set: without this, a constant ~200 MiB would land in every "step peak".
    """
    side = 2 * (8 if arch == "hrnet" else 2 ** depth_for_patch(patch))  # bottom level 2^3 (BatchNorm)
    was_training = net.training
    net.train()
    for b in (1, 2):
        sum_outputs(net(torch.randn(b, 1, side, side, side, device=device))).backward()
    net.zero_grad(set_to_none=True)
    net.train(was_training)


def _train_step_fn(
    net: nn.Module, arch: str, x: torch.Tensor, y: torch.Tensor, device: torch.device, threads: int | None = None
) -> Callable[[], float]:
    """A closure that runs one training step (forward, loss, backward, Adam) and returns its seconds."""
    loss_fn = loss_for_arch(arch)
    opt = torch.optim.Adam(net.parameters(), lr=3e-4)
    net.train()

    def step() -> float:
        if threads is not None:
            torch.set_num_threads(threads)
        t0 = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        loss = loss_fn(net(x), y)
        loss.backward()
        opt.step()
        _sync(device)
        return time.perf_counter() - t0

    return step


def _infer_step_fn(net: nn.Module, x: torch.Tensor, device: torch.device,
                   threads: int | None = None) -> Callable[[], float]:
    """A closure that runs one inference forward pass (eval, no_grad) and returns its seconds."""

    def step() -> float:
        if threads is not None:
            torch.set_num_threads(threads)
        net.eval()
        t0 = time.perf_counter()
        with torch.no_grad():
            net(x)
        _sync(device)
        return time.perf_counter() - t0

    return step


def _times(times: Sequence[float]) -> dict[str, float]:
    return {"median_s": statistics.median(times), "mean_s": statistics.fmean(times), "min_s": min(times)}


# ---------------------------------------------------------------- measurements


def measure_train(
    arch: str,
    pocket: bool,
    patch: Sequence[int],
    batch: int,
    warmup: int = 1,
    repeats: int = 3,
    device: str = "auto",
    channels_last: bool = False,
    bf16: bool = False,
) -> dict[str, Any]:
    """Peak memory and time of training steps at ``batch`` (memory over warm-up and timed steps)."""
    dev = _device(device)
    torch.manual_seed(0)
    net = _prepare(build_network(arch, pocket, patch), dev, channels_last, bf16)
    _page_in(net, arch, patch, dev)
    mem = _Memory(dev)
    mem.start()  # baseline: network built, before the batch, gradients, Adam state and activations
    x, y = _batch(batch, patch, dev)
    step = _train_step_fn(net, arch, x, y, dev)
    # memory: peak over the warm-up steps, at least two (the first allocates the Adam state, so only the
    # second shows the steady state); with fewer warm-up steps, over all steps
    for _ in range(warmup):
        step()
    memory_steps = warmup
    if warmup >= 2:
        memory = mem.stop()
        fast_malloc()  # timed steps with glibc's usual heap reuse
    times = [step() for _ in range(repeats)]
    if warmup < 2:
        memory = mem.stop()
        memory_steps = warmup + repeats
    return {**memory, **_times(times), "steps_timed": len(times), "memory_steps": memory_steps}


def measure_infer(
    arch: str,
    pocket: bool,
    patch: Sequence[int],
    sizes: Sequence[int],
    volume: Sequence[int] | None,
    sw_batch_size: int = 2,
    warmup: int = 1,
    repeats: int = 3,
    device: str = "auto",
    channels_last: bool = False,
    bf16: bool = False,
) -> dict[str, Any]:
    """Sliding-window inference of one ``volume`` (time, peak memory), then batch-1 throughput per size."""
    dev = _device(device)
    torch.manual_seed(0)
    net = _prepare(build_network(arch, pocket, patch), dev, channels_last, bf16).eval()
    result: dict[str, Any] = {}
    with torch.no_grad():
        if volume:
            inferer = SlidingWindowInferer(
                roi_size=list(patch), sw_batch_size=sw_batch_size, overlap=0.5, mode="gaussian", sigma_scale=0.125
            )
            net(torch.zeros(sw_batch_size, 1, *patch, device=dev))  # warm-up: one batch of windows
            image = torch.randn(1, 1, *volume, generator=torch.Generator().manual_seed(0)).to(dev)
            mem = _Memory(dev)
            mem.start()
            t0 = time.perf_counter()
            out = inferer(image, net)
            _sync(dev)
            sw_s = time.perf_counter() - t0
            result["sw"] = {**mem.stop(), "time_s": sw_s}
            del out, image
        result["throughput"] = {}
        for size in sizes:
            x = torch.randn(1, 1, size, size, size).to(dev)
            times = []
            for i in range(warmup + repeats):
                t0 = time.perf_counter()
                net(x)
                _sync(dev)
                if i >= warmup:
                    times.append(time.perf_counter() - t0)
            t = _times(times)
            result["throughput"][str(size)] = {**t, "images_per_s": 1.0 / t["median_s"]}
    return result


def _rel_diff(out: torch.Tensor, ref: torch.Tensor) -> float:
    """``max |out - ref| / max |ref|``: error relative to the output's scale (element-wise ratios blow up
    near zero)."""
    return float((out.float() - ref.float()).abs().max() / ref.float().abs().max().clamp_min(1e-12))


def _ab(step_a: Callable[[], float], step_b: Callable[[], float], pairs: int) -> dict[str, float]:
    """Interleave ``a, b, a, b, ...`` after one warm-up each; the speed-up is the median of per-pair
    ratios, robust to a machine whose load changes during the run."""
    step_a()
    step_b()
    ta, tb = [], []
    for _ in range(pairs):
        ta.append(step_a())
        tb.append(step_b())
    return {
        "baseline_s": statistics.median(ta),
        "option_s": statistics.median(tb),
        "speedup": statistics.median(a / b for a, b in zip(ta, tb)),
    }


def _accuracy(arch: str, base: nn.Module, other: nn.Module, x: torch.Tensor, y: torch.Tensor) -> dict[str, float]:
    """Output and loss differences of two networks with the same weights on a fixed batch (eval mode)."""
    loss_fn = loss_for_arch(arch)
    base.eval()
    other.eval()
    with torch.no_grad():
        ref, out = base(x), other(x)
        l_ref, l_out = float(loss_fn(ref, y)), float(loss_fn(out, y))
    return {"max_rel_diff": _rel_diff(out, ref), "loss_rel_diff": abs(l_out - l_ref) / max(abs(l_ref), 1e-12)}


def measure_speed(
    arch: str = "unet",
    patch: Sequence[int] = (32, 32, 32),
    batch: int = 2,
    pairs: int = 2,
    variants: Sequence[str] = ("pocket",),
    sw_volume: Sequence[int] | None = None,
    sw_batch_sizes: Sequence[int] = (1, 2, 4),
    conv_size: int = 64,
    cores: int | None = None,
    gemm_size: int = 2048,
) -> dict[str, Any]:
    """CPU speed options, each against plain fp32 NCDHW with the default threads, on the same weights.

    Measures: a large fp32 GEMM (the practical peak), one 32->32 3D conv in each layout / bf16, and per
    network variant a training step and an inference forward pass (eval, no_grad, same batch) with
    channels-last, with bf16 autocast and with one thread; then
    sliding-window inference of ``sw_volume`` per ``sw_batch_size``. The thread option compares one
    thread with ``cores`` threads; everything else runs with the process's threads.
    """
    dev = torch.device("cpu")
    default_threads = torch.get_num_threads()
    res: dict[str, Any] = {"threads": default_threads, "bf16_support": perf.bf16_support()}
    res["gemm_fp32_gflops"] = perf.gemm_gflops(gemm_size)
    res["gemm_size"] = gemm_size
    res["conv"] = {
        "contiguous": perf.conv_gflops(size=conv_size, layout="contiguous"),
        "channels_last": perf.conv_gflops(size=conv_size, layout="channels_last"),
    }
    if res["bf16_support"]["mkldnn_bf16"]:
        res["conv"]["channels_last_bf16"] = perf.conv_gflops(size=conv_size, layout="channels_last",
                                                             dtype=torch.bfloat16, repeats=3)
    res["conv_size"] = conv_size
    x, y = _batch(batch, patch, dev)
    options: list[tuple[str, dict[str, Any]]] = [("channels_last", {"channels_last": True})]
    if res["bf16_support"]["mkldnn_bf16"]:
        options.append(("bf16 autocast", {"bf16": True}))
    cores = cores or perf.physical_cores()
    if cores > 1:
        options.append((f"1 thread (baseline {cores})", {"threads": 1, "base_threads": cores}))
    res["ab"] = []
    for variant in variants:
        torch.manual_seed(0)
        ref = build_network(arch, variant == "pocket", patch)
        for name, opt in options:
            base = copy.deepcopy(ref)
            other = _prepare(copy.deepcopy(ref), dev, opt.get("channels_last", False), opt.get("bf16", False))
            row: dict[str, Any] = {"option": name, "arch": arch, "variant": variant, "batch": batch, "mode": "train"}
            row.update(_accuracy(arch, base, other, x, y))
            step_a = _train_step_fn(base, arch, x, y, dev, threads=opt.get("base_threads", default_threads))
            step_b = _train_step_fn(other, arch, x, y, dev, threads=opt.get("threads", default_threads))
            row.update(_ab(step_a, step_b, pairs))
            torch.set_num_threads(default_threads)
            res["ab"].append(row)
            # the same option for inference: forward only, eval, no_grad (a batch of sliding windows)
            irow: dict[str, Any] = {**{k: row[k] for k in ("option", "arch", "variant", "batch", "max_rel_diff",
                                                            "loss_rel_diff")}, "mode": "infer"}
            fwd_a = _infer_step_fn(base, x, dev, threads=opt.get("base_threads", default_threads))
            fwd_b = _infer_step_fn(other, x, dev, threads=opt.get("threads", default_threads))
            irow.update(_ab(fwd_a, fwd_b, pairs))
            torch.set_num_threads(default_threads)
            res["ab"].append(irow)
            del base, other
    if sw_volume:
        torch.manual_seed(0)
        net = build_network(arch, True, patch).eval()
        image = torch.randn(1, 1, *sw_volume, generator=torch.Generator().manual_seed(0))
        times: dict[str, list[float]] = {str(b): [] for b in sw_batch_sizes}
        with torch.no_grad():
            net(torch.zeros(max(sw_batch_sizes), 1, *patch))
            for _ in range(max(1, pairs // 2)):
                for b in sw_batch_sizes:
                    inferer = SlidingWindowInferer(list(patch), b, overlap=0.5, mode="gaussian", sigma_scale=0.125)
                    t0 = time.perf_counter()
                    inferer(image, net)
                    times[str(b)].append(time.perf_counter() - t0)
        res["sw"] = {"arch": arch, "variant": "pocket", "volume": list(sw_volume),
                     "seconds": {b: statistics.median(t) for b, t in times.items()}}
    return res


# ---------------------------------------------------------------- child entry point


def run_config(kind: str, cfg: dict[str, Any], conn: Any) -> None:
    """Entry point of a measurement process: run ``measure_<kind>(**cfg)``, send ``{"status", ...}``.

    ``cfg`` may hold ``threads`` (intra-op threads) and ``mem_limit_bytes`` (address-space head-room, so
    a configuration too big for the machine fails here instead of triggering the OOM killer).
    """
    cfg = dict(cfg)
    threads = cfg.pop("threads", None)
    limit = cfg.pop("mem_limit_bytes", None)
    try:
        if threads:
            torch.set_num_threads(int(threads))
        limit_address_space(limit)
        fn = {"train": measure_train, "infer": measure_infer, "speed": measure_speed}[kind]
        out = {"status": "ok", **fn(**cfg)}
    except (MemoryError, RuntimeError) as e:
        msg = str(e)
        if isinstance(e, MemoryError) or "can't allocate memory" in msg or "not enough memory" in msg:
            gib = f" (limit {limit / 2**30:.2f} GiB)" if limit else ""
            out = {"status": f"out of memory{gib}"}
        else:
            out = {"status": f"error: {msg.splitlines()[0][:200] if msg else type(e).__name__}",
                   "traceback": traceback.format_exc()}
    except Exception as e:  # reported in the table; the profile goes on
        out = {"status": f"error: {type(e).__name__}: {str(e)[:200]}", "traceback": traceback.format_exc()}
    conn.send(out)
    conn.close()
    os._exit(0)  # skip interpreter teardown (thread pools, large frees): the parent waits on it
