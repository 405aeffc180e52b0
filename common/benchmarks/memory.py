"""Peak memory and time per volume: whole-volume 3D U-Net vs slab-wise U-Net vs slab-wise cascade.

The methods and the reference figures are from Wehen, "A Comparative Study of U-Net, Patch-wise U-Net, and
Patch-wise U-Net Cascade" (bachelor thesis, 2023), the slab-wise cascade study, "the study" below. Usage::

    pocket memory                        # brain 4x240x240x155 and liver 1x512x512x500
    pocket memory --quick                # reduced sizes (brain /4, liver /8 per side), ~2 min
    pocket memory --sizes brain --widths pocket --methods slab,cascade
    pocket memory --sizes 1x32x32x20     # any CxHxWxD (2 classes, factor 0.3)
    pocket memory --grad                 # the study's setting: autograd on, train-mode BN

Networks: the study's 3D U-Net (32..512 feature maps, depth 4, built by ``common.networks.get_network``) in its
full and pocket widths, random weights (memory and time do not depend on them). Methods: ``whole`` (one call on
the volume, zero-padded to a multiple of 16), ``slab`` (``SlabInferer``: 16-voxel slabs along ``--axis``), and
``cascade`` (``CascadeInferer``: stage 1 on the volume down-sampled by 0.3 (brain) / 0.2 (liver), stage 2
slab-wise on image + guidance). Default mode: inference, ``model.eval()`` under ``torch.no_grad()``.

Measurement: every configuration runs in a **fresh process**. On CPU its memory is the peak resident set
(``VmHWM`` of /proc/self/status, ``ru_maxrss`` where that is missing) at its end **minus the same process's
peak after importing torch/MONAI and building the network(s)** -- the footprint of an idle process with the
net built -- so it counts the input volume, the output logits, the cascade's guidance and stage-2 input,
and the network's working memory. On CUDA it is ``torch.cuda.max_memory_allocated()`` minus the memory held
after building the network; the volume stays on the CPU for slab/cascade (only one slab on the GPU, as in
the study) and goes to the GPU for ``whole``. Time is wall clock per volume (the mean of ``--repeats``).

Configurations that would not fit: before a full-size run the configuration is run on three small probes
(32 or 64 voxels across the non-slab axes, 32 or 96 along the slab axis; see ``estimate``); memory and time
are extrapolated linearly in the non-slab area and affinely along the slab axis. A configuration estimated
above ``--max-gb`` (default 80% of the available memory) or ``--max-seconds`` is reported as "skipped: est.
...", not run; a run's own estimate is shown next to its measurement.

The study's figures (NVIDIA A40) were measured with autograd **on** and BatchNorm in train mode (its
evaluation never called ``eval()``/``no_grad()``), i.e. the graph of each network call was kept until its
output was detached: compare them with ``--grad`` (``--backward`` adds a backward pass per network call, the
training-like peak).
"""

from __future__ import annotations

import json
import math
import os
import resource
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from common.errors import InvalidInputError

GB = 1e9  # decimal GB, as the study (max_memory_allocated() / 1e9)
METHODS = ("whole", "slab", "cascade")
WIDTHS = ("full", "pocket")
PROBES = ((32, 32), (64, 32), (64, 96))  # (non-slab side, slab-axis length) of the estimate's probes


@dataclass(frozen=True)
class Size:
    """A benchmark volume: shape ``(C, H, W, D)``, classes, cascade factor and the study's figures."""

    name: str
    shape: tuple[int, int, int, int]
    num_classes: int
    factor: float
    study_gb: dict[str, str]
    study_s: dict[str, str]


SIZES = {
    "brain": Size("brain", (4, 240, 240, 155), 4, 0.3, {"whole": "21.5", "slab": "2.9", "cascade": "2.8"},
                  {"whole": "0.35", "slab": "0.67", "cascade": "0.91"}),
    "liver": Size("liver", (1, 512, 512, 500), 3, 0.2,
                  {"whole": "325+ (OOM)", "slab": "10.6", "cascade": "12.4"}, {"slab": "4.49", "cascade": "5.90"}),
}
QUICK = {"brain": (4, 60, 60, 39), "liver": (1, 64, 64, 63)}


# ---------------------------------------------------------------- child process: one measurement


def _peak_rss_bytes() -> int:
    """Peak resident set of this process (VmHWM; ru_maxrss is in kB on Linux)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def measure(cfg: dict[str, Any]) -> dict[str, Any]:
    """Build the network(s), run one configuration on each of ``cfg["shapes"]`` (``repeats`` times), return
    the peak memory (bytes) and mean time (s) per shape."""
    import torch
    from torch import nn

    from common.inference.cascade import CascadeInferer
    from common.inference.slabs import SlabInferer
    from common.networks import count_parameters, get_network

    if cfg.get("threads"):
        torch.set_num_threads(cfg["threads"])
    torch.manual_seed(0)
    cuda = cfg["device"] == "cuda"
    dev = torch.device("cuda" if cuda else "cpu")
    c, k, grad, backward = cfg["shapes"][0][0], cfg["num_classes"], cfg["grad"], cfg["backward"]

    def unet(in_ch: int) -> nn.Module:
        net = get_network("unet", 3, in_ch, k, init_filters=cfg["init_filters"], depth=cfg["depth"],
                          pocket=cfg["width"] == "pocket").to(dev)
        return net.train(grad)

    class Step(nn.Module):
        """The study's call: forward with autograd (optionally + backward), output detached per call."""

        def __init__(self, module: nn.Module) -> None:
            super().__init__()
            self.module = module

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            out = self.module(x)
            if backward:
                out.float().mean().backward()
            return out.detach()

    wrap = Step if grad else (lambda m: m)
    slab = cfg["slab_size"]
    if cfg["method"] == "cascade":
        stage1, stage2 = unet(c), unet(c + k - 1)
        params = count_parameters(stage1) + count_parameters(stage2)
        inferer = CascadeInferer(wrap(stage1), cfg["factor"], slab, cfg["axis"], freeze_stage1=not grad,
                                 sw_device=dev, device="cpu")
        network = wrap(stage2)
    else:
        network = wrap(unet(c))
        params = count_parameters(network)
        inferer = SlabInferer(slab if cfg["method"] == "slab" else None, cfg["axis"], sw_device=dev,
                              device="cpu" if cfg["method"] == "slab" else dev)

    if cuda:
        torch.cuda.synchronize()
        base = torch.cuda.memory_allocated()
    else:
        base = _peak_rss_bytes()
    runs = []
    for shape in cfg["shapes"]:  # probes: growing sizes in one process (the CPU peak is the largest one's)
        if cuda:
            torch.cuda.reset_peak_memory_stats()
        x = torch.randn(1, *shape, device=dev if cfg["method"] == "whole" else "cpu")
        times = []
        if cfg.get("warmup"):  # probes: keep one-off start-up costs (oneDNN primitives per shape) out of the time
            with torch.enable_grad() if grad else torch.no_grad():
                inferer(x, network)
        for _ in range(cfg["repeats"]):
            t0 = time.perf_counter()
            with torch.enable_grad() if grad else torch.no_grad():
                out = inferer(x, network)
            if cuda:
                torch.cuda.synchronize()
            times.append(time.perf_counter() - t0)
            assert out.shape == (1, k, *shape[1:]), out.shape
            del out
        del x
        peak = (torch.cuda.max_memory_allocated() if cuda else _peak_rss_bytes()) - base
        runs.append({"peak_bytes": int(peak), "seconds": sum(times) / len(times)})
    return {"runs": runs, "params": int(params)}


# ---------------------------------------------------------------- parent: configurations, estimates, table


def _run_child(cfg: dict[str, Any], timeout: float | None) -> dict[str, Any]:
    """One fresh process per measurement; its last stdout line is the JSON result. Probes run with glibc's
    mmap threshold fixed at 128 kB, so freed buffers go back to the OS and one probe's leftovers do not blur
    the next one's peak (measurements keep the default allocator)."""
    cmd = [sys.executable, "-c", "from common.benchmarks.memory import _child; _child()", json.dumps(cfg)]
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "131072"} if cfg.get("warmup") else None
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {timeout:.0f} s"}
    if proc.returncode != 0:
        lines = proc.stderr.strip().splitlines()
        why = "killed (out of memory?)" if proc.returncode < 0 else (lines[-1] if lines else f"exit {proc.returncode}")
        return {"error": f"failed: {why}"}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _padded(n: int, m: int) -> int:
    return math.ceil(n / m) * m


def estimate(cfg: dict[str, Any]) -> tuple[float, float] | dict[str, Any]:
    """Extrapolated (peak bytes, seconds) of ``cfg`` from three small probes run one after the other (growing)
    in one fresh process, each timed after a warm-up call.

    Model: ``y = c0 + area * (a + b * T)`` with ``area`` the (padded) non-slab cross-section and ``T`` the
    (padded) length along the slab axis; ``c0`` (the size-independent overhead) comes from two cross-sections
    at the same ``T``, ``b`` from two lengths, so neither is multiplied up by the extrapolation.
    """
    shape = list(cfg["shapes"][0])
    ax = 1 + cfg["axis"] % 3
    unit = cfg["slab_size"] if cfg["method"] != "whole" else 16
    probes = []
    for side, thickness in PROBES:
        probe = [shape[0]] + [min(s, side) for s in shape[1:]]
        probe[ax] = thickness
        probes.append(probe)
    r = _run_child({**cfg, "shapes": probes, "repeats": 1, "warmup": True}, timeout=None)
    if "error" in r:
        return r

    def area(p: list[int]) -> int:
        return math.prod(_padded(s, 16) for i, s in enumerate(p[1:], 1) if i != ax)

    a1, a2, a_full = area(probes[0]), area(probes[1]), area(shape)
    t1, t2, t_full = probes[1][ax], probes[2][ax], _padded(shape[ax], unit)

    def extrapolate(key: str) -> float:
        y1, y2, y3 = (run[key] for run in r["runs"])
        per_area = (y2 - y1) / (a2 - a1) if a2 > a1 else y2 / a2  # a + b * t1
        c0 = y1 - a1 * per_area if a2 > a1 else 0.0
        slope = (y3 - y2) / (a2 * (t2 - t1))  # b
        return max(c0 + a_full * (per_area + slope * (t_full - t1)), y3)

    return extrapolate("peak_bytes"), extrapolate("seconds")


def _available_bytes() -> float:
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 24 * 2**30


def _sizes(spec: str, quick: bool) -> list[tuple[str, Size]]:
    out = []
    for item in spec.split(","):
        item = item.strip()
        if item in SIZES:
            size = SIZES[item]
            if quick:
                size = Size(size.name, QUICK[item], size.num_classes, size.factor, {}, {})
            out.append((f"{item} {'x'.join(map(str, size.shape))}", size))
        else:
            try:
                shape = tuple(int(v) for v in item.lower().split("x"))
            except ValueError:
                shape = ()
            if len(shape) != 4:
                raise SystemExit(f"--sizes: {item!r} is neither brain/liver nor CxHxWxD.")
            out.append((item, Size(item, shape, 2, 0.3, {}, {})))  # type: ignore[arg-type]
    return out


def _names(value: str | Sequence[str]) -> list[str]:
    """Fire turns ``a,b`` into a tuple and ``a`` into a string: accept both."""
    items = value.split(",") if isinstance(value, str) else [str(v) for v in value]
    return [v.strip() for v in items if v.strip()]


def memory(
    quick: bool = False,
    sizes: str | Sequence[str] = "brain,liver",
    methods: str | Sequence[str] = METHODS,
    widths: str | Sequence[str] = WIDTHS,
    grad: bool = False,
    backward: bool = False,
    slab_size: int = 16,
    axis: int = -1,
    init_filters: int = 32,
    depth: int = 4,
    device: str = "auto",
    threads: int = 0,
    repeats: int = 1,
    max_gb: float | None = None,
    max_seconds: float = 600.0,
    no_estimate: bool = False,
    estimate_only: bool = False,
) -> None:
    """Print the memory/time table: whole-volume vs slab-wise U-Net vs slab-wise cascade, full and pocket.

    Args:
        quick: reduced sizes (brain /4, liver /8 per side), no probes: about 2 minutes.
        sizes: ``brain``, ``liver`` and/or ``CxHxWxD``, comma-separated.
        methods, widths: subsets of ``whole,slab,cascade`` and ``full,pocket``.
        grad: autograd on and train-mode BatchNorm (the setting of Wehen's GPU figures).
        backward: with ``grad``, a backward pass per network call (the training-like peak).
        slab_size, axis: slab thickness in voxels and the spatial axis it runs along (-1 = last).
        init_filters, depth: the 3D U-Net's first width and number of down-samplings.
        device: ``auto``, ``cpu`` or ``cuda``. threads: torch threads per run (0 = torch's default).
        repeats: runs per configuration (the time is their mean).
        max_gb, max_seconds: skip configurations estimated above these (default 80% of available memory).
        no_estimate: run every configuration without probing. estimate_only: print the probes' estimates only.
    """
    methods, widths = _names(methods), _names(widths)
    if not set(methods) <= set(METHODS) or not set(widths) <= set(WIDTHS):
        raise InvalidInputError(f"methods must come from {METHODS} and widths from {WIDTHS}.")
    if device not in ("auto", "cpu", "cuda"):
        raise InvalidInputError(f"device must be auto, cpu or cuda, got {device!r}.")
    grad = grad or backward
    if device == "auto":
        import torch

        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda":
        import torch

        budget = max_gb * GB if max_gb else 0.8 * torch.cuda.mem_get_info()[1]
    else:
        budget = max_gb * GB if max_gb else 0.8 * _available_bytes()
    mode = "forward, autograd on, train-mode BN" + (" + backward" if backward else "") if grad else (
        "inference, eval() + no_grad()")
    print(f"# Memory benchmark ({device}, {mode}, slab {slab_size} along spatial axis {axis})\n")
    print("| volume | method | width | parameters | peak memory (GB) | time / volume (s) | study GB | study s |")
    print("|---|---|---|---:|---:|---:|---:|---:|")
    for label, size in _sizes(",".join(_names(sizes)), quick):
        for method in methods:
            for width in widths:
                cfg = {"shapes": [list(size.shape)], "num_classes": size.num_classes, "factor": size.factor,
                       "method": method, "width": width, "grad": grad, "backward": backward,
                       "slab_size": slab_size, "axis": axis, "init_filters": init_filters,
                       "depth": depth, "device": device, "threads": threads, "repeats": repeats}
                note, est_mem = "", ""
                if not (quick or no_estimate):
                    est = estimate(cfg)
                    if isinstance(est, dict):
                        note = est["error"]
                    elif estimate_only:
                        note = f"est. {est[0] / GB:.2f} GB, {est[1]:.0f} s"
                    elif est[0] > budget or est[1] > max_seconds:
                        note = f"skipped: est. {est[0] / GB:.1f} GB, {est[1]:.0f} s"
                    else:
                        est_mem = f" (est. {est[0] / GB:.2f})"
                if note:
                    mem, sec, params = note, "", ""
                else:
                    r = _run_child(cfg, timeout=3 * max_seconds + 120)
                    if "error" in r:
                        mem, sec, params = r["error"], "", ""
                    else:
                        run = r["runs"][0]
                        mem, sec = f"{run['peak_bytes'] / GB:.2f}{est_mem}", f"{run['seconds']:.2f}"
                        params = f"{r['params']:,}"
                study = width == "full" and not quick
                print(f"| {label} | {method} | {width} | {params} | {mem} | {sec} | "
                      f"{size.study_gb.get(method, '') if study else ''} | "
                      f"{size.study_s.get(method, '') if study else ''} |", flush=True)
    print(
        "\nPeak memory: " + ("torch.cuda.max_memory_allocated() minus the memory held after building the net."
                             if device == "cuda" else
                             "peak RSS (VmHWM) of a fresh process per configuration minus that process's peak after "
                             "importing torch and building the net(s) (an idle process's baseline); it includes the "
                             "input volume, the output logits and, for the cascade, the guidance and stage-2 input.")
        + " GB = 1e9 bytes. 'est.' = extrapolated from three small probes."
    )
    print("Study (Wehen): NVIDIA A40, torch.cuda.max_memory_allocated(), measured with autograd ON and BatchNorm in "
          "train mode (training-like; compare with --grad), volume on the CPU and slabs copied to the GPU; the "
          "liver whole-volume U-Net ran out of memory trying to allocate 325 GB (in training).")


def _child() -> None:
    """Entry of the fresh measuring process: one JSON configuration in ``argv[1]``, one JSON line out."""
    print(json.dumps(measure(json.loads(sys.argv[1]))))
