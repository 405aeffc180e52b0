"""Profile full vs pocket networks: parameters, MACs, training memory and step time, inference speed.

Usage::

    pocket profile --quick --out /tmp/profile  # U-Net, 32^3 patch, batch 1-2: minutes on 2 cores
    pocket profile --out results/              # all five archs, 128^3, batch 1/2/4 (the paper's)
    pocket profile --archs unet,densenet --patch 64 --batches 1,2 --sections train,infer

Everything is measured in one run, full and pocket of a configuration back to back, so the pocket/full
ratios compare like with like on a machine whose load changes. Sections (``--sections``):

* ``size``: parameters and MACs of one forward pass at the patch (``FlopCounterMode`` on the ``meta``
  device; MACs = FLOPs / 2, convolutions and matrix products only).
* ``train``: one fresh process per (arch, batch, variant): peak memory of training steps (forward, loss,
  backward, Adam) above the process's baseline with the network built (CPU: ``VmHWM`` after reset, see
  ``common.benchmarks.profile_measure``; CUDA: ``max_memory_allocated``), and the median/mean time per step after
  ``--warmup`` steps over ``--repeats`` steps.
* ``infer``: one fresh process per (arch, variant): sliding-window inference of a whole volume (MONAI
  ``SlidingWindowInferer``, roi = patch, overlap 0.5, gaussian; default 256x256x192 = NFBS, scaled with
  the patch so the number of windows stays 18), then batch-1 throughput (images/s, eval, no_grad) per size.
* ``speed``: CPU speed options (``common.training.cpu``) against the plain fp32 baseline on the same weights.

Outputs: Markdown on stdout (progress on stderr, one line per configuration); with ``--out DIR`` also
``profile.md``, ``profile.csv`` (one row per measurement), ``profile.json`` (raw) and ``profile.png``
(training memory and step time per batch size, like the paper's Fig. 3).
"""

from __future__ import annotations

import csv
import datetime
import json
import multiprocessing as mp
import os
import platform
import sys
import time
from collections.abc import Sequence
from typing import Any

import fire
import torch

from common.errors import InvalidInputError
from common.networks import POCKETNET_ARCHS
from common.training import cpu as perf

SEGMENTERS = tuple(a for a in POCKETNET_ARCHS if a != "classifier")
VARIANTS = ("full", "pocket")
SECTIONS = ("size", "train", "infer", "speed")
NFBS_VOLUME = (256, 256, 192)
# the paper's GPU figures: Fig. 3 (U-Net, BraTS, Tesla T4, TensorFlow) as ranges over batch sizes, and
# Table III (RTX 8000) pocket-vs-full throughput speed-up in % per image side
PAPER_MEMORY = (-87.7, -28.3)  # % change of peak training memory (largest saving at the smallest batch)
PAPER_STEP = (-43.2, -25.0)  # % change of time per step (largest saving at the largest batch)
PAPER_THROUGHPUT = {
    32: {"unet": 5.89, "resnet": 1.17, "densenet": 3.74, "hrnet": 12.24},
    64: {"unet": 2.48, "resnet": 12.54, "densenet": 11.60, "hrnet": 16.53},
    128: {"unet": 5.88, "resnet": 3.70, "densenet": 7.86, "hrnet": 13.41},
}
MODES = {
    "quick": {"archs": ("unet",), "patch": 32, "batches": (1, 2), "sizes": (32, 64), "warmup": 2, "repeats": 3,
              "speed_patch": 32, "speed_pairs": 3, "speed_variants": ("pocket",)},
    "full": {"archs": SEGMENTERS, "patch": 128, "batches": (1, 2, 4), "sizes": (32, 64, 128), "warmup": 2,
             "repeats": 3, "speed_patch": 64, "speed_pairs": 3, "speed_variants": ("pocket", "full")},
}
CSV_COLUMNS = (
    "section", "arch", "variant", "patch", "batch", "size", "params", "gmac_forward", "step_peak_mib",
    "process_peak_mib", "baseline_mib", "step_median_s", "step_mean_s", "gflops", "pct_gemm_peak",
    "images_per_s", "sw_volume", "sw_batch_size", "sw_time_s", "sw_peak_mib", "memory_method", "status",
)


# ---------------------------------------------------------------- argument parsing (fire gives str/int/tuple)


def _as_list(value: Any, kind: type = str) -> list:
    if value is None:
        return []
    if isinstance(value, str):
        value = [v for v in value.replace(" ", "").split(",") if v]
    elif not isinstance(value, (list, tuple)):
        value = [value]
    return [kind(v) for v in value]


def _as_shape(value: Any) -> tuple[int, int, int] | None:
    if value is None:
        return None
    dims = _as_list(value, int)
    if len(dims) == 1:
        dims = dims * 3
    if len(dims) != 3:
        raise InvalidInputError(f"a 3D size needs 1 or 3 integers, got {value!r}.")
    return tuple(dims)  # type: ignore[return-value]


def _scaled_volume(patch: Sequence[int]) -> tuple[int, ...]:
    """The NFBS volume scaled like the patch (128 -> 256x256x192): the same 18 windows at overlap 0.5."""
    f = min(patch) / 128
    return tuple(max(p, int(round(v * f))) for v, p in zip(NFBS_VOLUME, patch))


def _fits(size: int | Sequence[int], arch: str, patch: Sequence[int]) -> bool:
    """Whether the network built for ``patch`` accepts ``size`` (divisible by its down-sampling)."""
    from common.benchmarks.profile_measure import depth_for_patch

    multiple = 8 if arch == "hrnet" else 2 ** depth_for_patch(patch)
    return all(s % multiple == 0 for s in _as_list(size, int))


# ---------------------------------------------------------------- machine facts


def cpu_model() -> str:
    """The CPU's model name (``/proc/cpuinfo``), else what ``platform`` knows."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_summary() -> str:
    """One line naming the CPU, its core count and whether bf16 is native (the bundles' ``bf16: auto`` uses it).

    Figures measured in different sessions may come from different machines; this line goes beside them.
    """
    from common.training.cpu import bf16_support

    native = bf16_support()["native"]
    return f"{cpu_model()}, {os.cpu_count()} CPUs, bf16 {'native (on)' if native else 'not native (off)'}"


def _mem_available_bytes() -> int | None:
    try:
        with open("/proc/meminfo", encoding="ascii") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def _load() -> str:
    try:
        return "/".join(f"{v:.1f}" for v in os.getloadavg())
    except OSError:
        return "n/a"


# ---------------------------------------------------------------- isolated runs


class _Runner:
    """Runs one measurement per fresh process and prints one progress line per configuration.

    Processes are forked from a server that has imported torch/MONAI but run nothing (``forkserver``;
    ``spawn`` where unavailable): each configuration starts clean, without paying the import each time.
    """

    def __init__(self, total: int, timeout_s: float | None, budget_s: float | None, base_cfg: dict[str, Any]):
        method = "forkserver" if "forkserver" in mp.get_all_start_methods() else "spawn"
        self.ctx = mp.get_context(method)
        if method == "forkserver":
            self.ctx.set_forkserver_preload(["common.benchmarks.profile_measure"])
        self.total, self.done = total, 0
        self.timeout_s, self.budget_s = timeout_s, budget_s
        self.base_cfg = base_cfg
        self.t0 = time.perf_counter()

    def elapsed(self) -> float:
        return time.perf_counter() - self.t0

    def run(self, kind: str, label: str, cfg: dict[str, Any]) -> dict[str, Any]:
        from common.benchmarks.profile_measure import run_config

        self.done += 1
        if self.budget_s is not None and self.elapsed() > self.budget_s:
            result: dict[str, Any] = {"status": f"skipped (time budget {self.budget_s:.0f} s spent)"}
        else:
            start = time.perf_counter()
            recv, send = self.ctx.Pipe(duplex=False)
            proc = self.ctx.Process(target=run_config, args=(kind, {**self.base_cfg, **cfg}, send), daemon=True)
            proc.start()
            send.close()
            result = {}
            if recv.poll(self.timeout_s):
                try:
                    result = recv.recv()
                except EOFError:
                    pass
            proc.join(10 if result else 0.1)
            if proc.is_alive():
                proc.terminate()
                proc.join()
            if not result:
                code = proc.exitcode
                result = {"status": f"timeout (> {self.timeout_s:.0f} s)" if code in (None, -15)
                          else f"process died (exit code {code}; -9 = killed, likely out of memory)"}
            result["wall_s"] = time.perf_counter() - start
        print(f"[{self.done:>3}/{self.total}] {self.elapsed():7.0f} s  {label}: {_summary(kind, result)}",
              file=sys.stderr, flush=True)
        return result


def _summary(kind: str, r: dict[str, Any]) -> str:
    if r.get("status") != "ok":
        return str(r.get("status"))
    if kind == "train":
        return f"step {r['median_s']:.3f} s (median), peak +{r['delta_mib']:,.0f} MiB ({r['memory_method']})"
    if kind == "infer":
        parts = [f"{s}^3 {t['images_per_s']:.2f} img/s" for s, t in r["throughput"].items()]
        if "sw" in r:
            parts.insert(0, f"sliding window {r['sw']['time_s']:.1f} s, +{r['sw']['delta_mib']:,.0f} MiB")
        return ", ".join(parts)
    return "done"


# ---------------------------------------------------------------- formatting


def _pct(new: float | None, old: float | None) -> float | None:
    if new is None or old is None or old == 0:
        return None
    return 100.0 * (new - old) / old


def _f(v: Any, fmt: str = "{:,.0f}", none: str = "–") -> str:
    return none if v is None else fmt.format(v)


def _signed(v: float | None) -> str:
    return "–" if v is None else f"{v:+.1f}%"


def _md(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    out = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    out += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(out)


def _ok(r: dict[str, Any] | None) -> bool:
    return bool(r) and r.get("status") == "ok"


def _gflops(macs: int | None, seconds: float | None) -> float | None:
    return None if not macs or not seconds else 2 * macs / seconds / 1e9


# ---------------------------------------------------------------- the command


def profile(
    archs: Any = None,
    variants: Any = "full,pocket",
    patch: Any = None,
    batches: Any = None,
    sizes: Any = None,
    volume: Any = None,
    sw_batch_size: int = 2,
    warmup: int | None = None,
    repeats: int | None = None,
    quick: bool = False,
    out: str | None = None,
    device: str = "auto",
    channels_last: bool = False,
    bf16: bool | str = "auto",
    threads: int | str | None = "auto",
    sections: Any = "size,train,infer,speed",
    speed_patch: Any = None,
    speed_pairs: int | None = None,
    speed_variants: Any = None,
    timeout_s: float | None = None,
    budget_s: float | None = None,
    mem_limit_gib: float | None = None,
    gemm_size: int = 2048,
) -> None:
    """Profile full vs pocket networks and print/write the tables (see the module docstring).

    Args:
        archs: comma list of ``unet,resnet,densenet,hrnet,nnunet`` (quick: unet; full: all five).
        variants: ``full,pocket`` (ratios need both).
        patch: training patch / sliding-window roi, one int or ``D,H,W`` (quick 32, full 128); the depth
            is ``log2(min(patch) / 4)`` as in the bundles.
        batches: training batch sizes (quick 1,2; full 1,2,4).
        sizes: cube sides for inference throughput (quick 32,64; full 32,64,128 as Table III).
        volume: sliding-window volume ``D,H,W`` (default NFBS 256,256,192 scaled by ``min(patch)/128``);
            ``0`` skips sliding-window inference.
        sw_batch_size: windows per forward pass in sliding-window inference.
        warmup / repeats: untimed and timed steps per configuration (quick 2/3; full 2/3). Training
            memory is the peak over the warm-up steps (over all steps if fewer than 2: the second step is
            the first with Adam's state); the timed steps follow.
        quick: the small preset; any option given explicitly wins over the preset.
        out: folder for ``profile.md``, ``.csv``, ``.json`` and ``.png``.
        device: ``auto`` (CUDA if available), ``cpu`` or ``cuda``.
        channels_last / bf16: CPU options applied in the train/infer sections (``bf16="auto"``: only on
            CPUs with native bf16, see ``common.training.cpu.bf16_support``).
        threads: intra-op threads of every measurement: ``auto`` (default: the cores the 1-minute load
            average leaves idle, at least 1; ``common.training.cpu.auto_threads``), a number, or ``None`` (torch's
            default, one per core).
        sections: comma list of ``size,train,infer,speed``.
        speed_patch / speed_pairs / speed_variants: the speed-option section's patch, interleaved A/B pairs
            and variants (quick 32 / 3 / pocket; full 64 / 3 / pocket,full).
        timeout_s: limit per configuration process. budget_s: launch no new configuration after this.
        mem_limit_gib: address-space head-room per process (default 70% of MemAvailable), so a
            configuration too large fails alone instead of invoking the OOM killer.
        gemm_size: side of the fp32 GEMM whose GFLOP/s is the "peak" the efficiency columns refer to.
    """
    preset = MODES["quick" if quick else "full"]
    archs_l = _as_list(archs) or list(preset["archs"])
    for a in archs_l:
        if a not in SEGMENTERS:
            raise InvalidInputError(f"Unknown arch {a!r}; valid: {', '.join(SEGMENTERS)}.")
    variants_l = _as_list(variants)
    if not variants_l or any(v not in VARIANTS for v in variants_l):
        raise ValueError(f"variants must be a comma list of {VARIANTS}, got {variants!r}.")
    sections_l = _as_list(sections)
    if any(s not in SECTIONS for s in sections_l):
        raise ValueError(f"sections must be a comma list of {SECTIONS}, got {sections!r}.")
    patch_t = _as_shape(patch if patch is not None else preset["patch"])
    batches_l = _as_list(batches, int) or list(preset["batches"])
    sizes_l = _as_list(sizes, int) or list(preset["sizes"])
    if volume is None:
        volume_t: tuple[int, ...] | None = _scaled_volume(patch_t)
    else:
        volume_t = None if volume in (0, "0", "none", "None", False) else _as_shape(volume)
    warmup = preset["warmup"] if warmup is None else int(warmup)
    repeats = preset["repeats"] if repeats is None else int(repeats)
    speed_patch_t = _as_shape(speed_patch if speed_patch is not None else preset["speed_patch"])
    speed_pairs = preset["speed_pairs"] if speed_pairs is None else int(speed_pairs)
    speed_variants_l = _as_list(speed_variants) or list(preset["speed_variants"])
    dev = "cuda" if device == "auto" and torch.cuda.is_available() else ("cpu" if device == "auto" else device)
    use_bf16 = perf.bf16_support()["native"] if bf16 == "auto" and dev == "cpu" else bf16 is True
    load_start = _load()
    threads = perf.auto_threads() if threads == "auto" else (int(threads) if threads else None)
    if threads:
        torch.set_num_threads(threads)
    avail = _mem_available_bytes()
    limit = int(mem_limit_gib * 2**30) if mem_limit_gib else (int(0.7 * avail) if avail else None)

    from common.benchmarks.profile_measure import depth_for_patch, network_stats

    meta: dict[str, Any] = {
        "command": "pocket profile " + " ".join(sys.argv[1:]) if sys.argv[0].endswith("profile.py")
        else "common.benchmarks.profile.profile(...)",
        "date": datetime.datetime.now().isoformat(timespec="seconds"),
        "cpu": cpu_model(), "cores": perf.physical_cores(), "threads": torch.get_num_threads(),
        "device": dev, "torch": torch.__version__, "python": platform.python_version(),
        "load_start": load_start, "mem_available_gib": None if avail is None else avail / 2**30,
        "patch": list(patch_t), "depth": depth_for_patch(patch_t), "batches": batches_l, "sizes": sizes_l,
        "volume": None if volume_t is None else list(volume_t), "sw_batch_size": sw_batch_size,
        "warmup": warmup, "repeats": repeats, "channels_last": bool(channels_last), "bf16": use_bf16,
        "mem_limit_gib": None if limit is None else limit / 2**30, "bf16_support": perf.bf16_support(),
    }
    if dev == "cuda":
        meta["gpu"] = torch.cuda.get_device_name(0)
    meta["gemm_size"] = gemm_size
    meta["gemm_gflops_start"] = perf.gemm_gflops(gemm_size) if dev == "cpu" else None

    stats: dict[tuple[str, str], dict[str, int]] = {}
    if "size" in sections_l or "train" in sections_l or "infer" in sections_l:
        for a in archs_l:
            for v in variants_l:
                stats[(a, v)] = network_stats(a, v == "pocket", patch_t)
    fwd_macs: dict[tuple[str, str, int], int] = {}
    if "infer" in sections_l:
        for a in archs_l:
            for v in variants_l:
                for s in sizes_l:
                    if _fits(s, a, patch_t):
                        fwd_macs[(a, v, s)] = _forward_macs(a, v == "pocket", patch_t, s)

    n_train = len(archs_l) * len(batches_l) * len(variants_l) if "train" in sections_l else 0
    n_infer = len(archs_l) * len(variants_l) if "infer" in sections_l else 0
    n_speed = 1 if "speed" in sections_l and dev == "cpu" else 0
    base_cfg = {"threads": threads, "mem_limit_bytes": limit}
    runner = _Runner(n_train + n_infer + n_speed, timeout_s, budget_s, base_cfg)
    opts = {"device": dev, "channels_last": bool(channels_last), "bf16": use_bf16}
    print(f"profile: {len(archs_l)} arch(s) x {variants_l}, patch {patch_t}, depth {meta['depth']}, "
          f"{n_train + n_infer + n_speed} measurement process(es); load {meta['load_start']}",
          file=sys.stderr, flush=True)

    train: dict[tuple[str, int, str], dict[str, Any]] = {}
    if "train" in sections_l:
        for a in archs_l:
            for b in batches_l:
                for v in variants_l:
                    cfg = {"arch": a, "pocket": v == "pocket", "patch": list(patch_t), "batch": b,
                           "warmup": warmup, "repeats": repeats, **opts}
                    train[(a, b, v)] = runner.run("train", f"train {a:8s} {v:6s} batch {b}", cfg)
    infer: dict[tuple[str, str], dict[str, Any]] = {}
    if "infer" in sections_l:
        for a in archs_l:
            for v in variants_l:
                ok_sizes = [s for s in sizes_l if _fits(s, a, patch_t)]
                cfg = {"arch": a, "pocket": v == "pocket", "patch": list(patch_t), "sizes": ok_sizes,
                       "volume": None if volume_t is None else list(volume_t), "sw_batch_size": sw_batch_size,
                       "warmup": warmup, "repeats": repeats, **opts}
                infer[(a, v)] = runner.run("infer", f"infer {a:8s} {v:6s}", cfg)
    speed: dict[str, Any] | None = None
    if n_speed:
        cfg = {"arch": archs_l[0], "patch": list(speed_patch_t), "batch": 2, "pairs": speed_pairs,
               "variants": speed_variants_l, "sw_volume": list(_scaled_volume(speed_patch_t)),
               "cores": meta["cores"], "gemm_size": gemm_size}
        speed = runner.run("speed", f"speed options ({archs_l[0]}, {speed_patch_t[0]}^3, batch 2)", cfg)

    meta["gemm_gflops_end"] = perf.gemm_gflops(gemm_size) if dev == "cpu" else None
    meta["load_end"] = _load()
    meta["wall_s"] = runner.elapsed()
    peaks = [g for g in (meta["gemm_gflops_start"], meta["gemm_gflops_end"]) if g]
    meta["gemm_peak_gflops"] = max(peaks) if peaks else None

    report = {"meta": meta, "archs": archs_l, "variants": variants_l, "sections": sections_l,
              "stats": stats, "fwd_macs": fwd_macs, "train": train, "infer": infer, "speed": speed}
    text = render_markdown(report)
    print(text)
    if out:
        os.makedirs(out, exist_ok=True)
        with open(os.path.join(out, "profile.md"), "w", encoding="utf-8") as f:
            f.write(text + "\n")
        write_csv(report, os.path.join(out, "profile.csv"))
        with open(os.path.join(out, "profile.json"), "w", encoding="utf-8") as f:
            json.dump(_jsonable(report), f, indent=1)
        if train:
            from common.benchmarks.profile_plot import training_figure

            rows = [{"arch": a, "batch": b, "variant": v,
                     "step_peak_mib": r.get("delta_mib") if _ok(r) else None,
                     "step_median_s": r.get("median_s") if _ok(r) else None} for (a, b, v), r in train.items()]
            title = (f"Training step, {dev.upper()}, patch {'x'.join(map(str, patch_t))}: "
                     "peak memory above the built network, median time per step")
            training_figure(rows, os.path.join(out, "profile.png"), title)
        print(f"wrote {out}/profile.md, profile.csv, profile.json" + (", profile.png" if train else ""),
              file=sys.stderr)


def _forward_macs(arch: str, pocket: bool, patch: Sequence[int], size: int) -> int:
    """Forward MACs of the network built for ``patch`` on a ``size``^3 image (meta device)."""
    from common.benchmarks.complexity import count_macs
    from common.benchmarks.profile_measure import build_network

    with torch.device("meta"):
        net = build_network(arch, pocket, patch)
    return count_macs(net, (1, size, size, size), "forward")  # eval mode: BatchNorm accepts a 1^3 bottom level


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {("/".join(map(str, k)) if isinstance(k, tuple) else str(k)): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    return obj


# ---------------------------------------------------------------- report


def render_markdown(report: dict[str, Any]) -> str:
    """The Markdown report: set-up, then one table per section, pocket/full ratios next to the paper's."""
    m = report["meta"]
    peak = m.get("gemm_peak_gflops")
    parts = [
        "## Profile: full vs pocket",
        "",
        f"- command: `{m['command']}`",
        f"- {m['date']}; {m['cpu']}, {m['cores']} core(s), {m['threads']} torch thread(s), device "
        f"**{m['device']}**{' (' + m['gpu'] + ')' if m.get('gpu') else ''}; torch {m['torch']}",
        f"- load average (1/5/15 min) at start **{m['load_start']}**, at end **{m['load_end']}**; "
        f"wall time {m['wall_s']:.0f} s",
        f"- patch {'x'.join(map(str, m['patch']))} (depth {m['depth']}), warm-up {m['warmup']}, repeats "
        f"{m['repeats']} (median reported); channels-last {m['channels_last']}, bf16 autocast {m['bf16']}",
    ]
    if m["device"] == "cpu":
        parts.append(
            f"- fp32 GEMM ({m['gemm_size']}^2, MKL, {m['threads']} thread(s)) at start "
            f"{_f(m['gemm_gflops_start'], '{:.1f}')} / end {_f(m['gemm_gflops_end'], '{:.1f}')} GFLOP/s; "
            "the larger is the 'peak' the % columns use"
        )
    parts.append("")
    archs, variants = report["archs"], report["variants"]
    both = "full" in variants and "pocket" in variants

    if "size" in report["sections"]:
        rows = []
        for a in archs:
            s = {v: report["stats"].get((a, v)) for v in variants}
            for v in variants:
                rows.append([a, v, f"{s[v]['params']:,}", f"{s[v]['macs_forward'] / 1e9:,.2f}",
                             f"{s[v]['macs_train'] / 1e9:,.2f}",
                             _signed(_pct(s[v]["macs_forward"], s["full"]["macs_forward"]))
                             if both and v == "pocket" else ""])
        parts += [f"### Size and compute (batch 1, {'x'.join(map(str, m['patch']))})", "",
                  _md(["arch", "variant", "parameters", "GMAC forward", "GMAC forward+backward", "MACs pocket vs full"],
                      rows), "",
                  "MACs = FLOPs / 2 of `torch.utils.flop_counter.FlopCounterMode` (meta device): convolutions "
                  "(transposed included) and matrix products only; norms, activations, pooling and up-sampling "
                  "are not counted.", ""]

    if report["train"]:
        rows = []
        for a in archs:
            for b in m["batches"]:
                r = {v: report["train"].get((a, b, v), {}) for v in variants}
                mem = {v: r[v].get("delta_mib") if _ok(r[v]) else None for v in variants}
                proc = {v: r[v].get("peak_mib") if _ok(r[v]) else None for v in variants}
                sec = {v: r[v].get("median_s") if _ok(r[v]) else None for v in variants}
                mean = {v: r[v].get("mean_s") if _ok(r[v]) else None for v in variants}
                eff = {}
                for v in variants:
                    st = report["stats"].get((a, v))
                    g = _gflops(st["macs_train"] * b if st else None, sec[v])
                    eff[v] = g
                row = [a, b]
                for v in variants:
                    status = "" if _ok(r[v]) else f" ({r[v].get('status', 'not run')})"
                    row += [_f(mem[v]) + status, _f(proc[v]), _f(sec[v], "{:.3f}") + " / " + _f(mean[v], "{:.3f}"),
                            _f(eff[v], "{:.1f}") + (f" ({100 * eff[v] / peak:.0f}%)" if eff[v] and peak else "")]
                if both:
                    row += [_signed(_pct(mem["pocket"], mem["full"])), _signed(_pct(sec["pocket"], sec["full"]))]
                rows.append(row)
        headers = ["arch", "batch"]
        for v in variants:
            headers += [f"{v}: step peak MiB", f"{v}: process peak MiB", f"{v}: s/step median / mean",
                        f"{v}: conv GFLOP/s (% GEMM peak)"]
        if both:
            headers += ["memory pocket vs full", "time pocket vs full"]
        method = next((r.get("memory_method") for r in report["train"].values() if _ok(r)), "n/a")
        n_mem = next((r.get("memory_steps") for r in report["train"].values() if _ok(r)), "n/a")
        parts += ["### Training step (forward, L2-Dice loss, backward, Adam)", "", _md(headers, rows), "",
                  f"Step peak = peak resident memory over the first {n_mem} step(s) minus the same fresh process's "
                  f"RSS with the network built, before batch, gradients and Adam state exist ({method}; on CUDA: "
                  f"`max_memory_allocated` minus `memory_allocated` before). Process peak = the absolute peak "
                  f"(includes the weights and the Python/torch runtime). Conv GFLOP/s = counted forward+backward "
                  f"MACs x 2 x batch / median step time.", "",
                  f"Paper (Fig. 3, U-Net, BraTS, Tesla T4 GPU, TensorFlow): memory {PAPER_MEMORY[0]:+.1f}% to "
                  f"{PAPER_MEMORY[1]:+.1f}% (largest saving at the smallest batch), time per step "
                  f"{PAPER_STEP[0]:+.1f}% to {PAPER_STEP[1]:+.1f}% (largest saving at the largest batch).", ""]

    if report["infer"]:
        rows = []
        for a in archs:
            r = {v: report["infer"].get((a, v), {}) for v in variants}
            for s in m["sizes"]:
                ips = {v: r[v]["throughput"].get(str(s), {}).get("images_per_s") if _ok(r[v]) else None
                       for v in variants}
                row = [a, f"{s}^3"]
                for v in variants:
                    macs = report["fwd_macs"].get((a, v, s))
                    g = macs * 2 * ips[v] / 1e9 if macs and ips[v] else None
                    status = "" if _ok(r[v]) else f" ({r[v].get('status', 'not run')})"
                    row += [_f(ips[v], "{:.3f}") + status,
                            _f(g, "{:.1f}") + (f" ({100 * g / peak:.0f}%)" if g and peak else "")]
                if both:
                    row += [_signed(_pct(ips["pocket"], ips["full"])), _signed(PAPER_THROUGHPUT.get(s, {}).get(a))]
                rows.append(row)
        headers = ["arch", "image"]
        for v in variants:
            headers += [f"{v}: images/s", f"{v}: conv GFLOP/s (% GEMM peak)"]
        if both:
            headers += ["speed-up pocket vs full", "paper Table III (RTX 8000)"]
        parts += ["### Inference throughput (batch 1, eval, no_grad)", "", _md(headers, rows), "",
                  "Speed-up = 100 x (pocket - full) / full throughput, the paper's formula; Table III has no nnUNet.",
                  ""]
        if m.get("volume"):
            rows = []
            for a in archs:
                r = {v: report["infer"].get((a, v), {}) for v in variants}
                sw = {v: r[v].get("sw") if _ok(r[v]) else None for v in variants}
                row = [a]
                for v in variants:
                    row += [_f(sw[v]["time_s"] if sw[v] else None, "{:.1f}"),
                            _f(sw[v]["delta_mib"] if sw[v] else None), _f(sw[v]["peak_mib"] if sw[v] else None)]
                if both:
                    t = {v: sw[v]["time_s"] if sw[v] else None for v in variants}
                    mm = {v: sw[v]["delta_mib"] if sw[v] else None for v in variants}
                    row += [_signed(_pct(t["pocket"], t["full"])), _signed(_pct(mm["pocket"], mm["full"]))]
                rows.append(row)
            headers = ["arch"]
            for v in variants:
                headers += [f"{v}: s/volume", f"{v}: peak MiB above baseline", f"{v}: process peak MiB"]
            if both:
                headers += ["time pocket vs full", "memory pocket vs full"]
            vol = "x".join(map(str, m["volume"]))
            parts += [f"### Sliding-window inference of one {vol} volume (roi {'x'.join(map(str, m['patch']))}, "
                      f"overlap 0.5, gaussian, sw_batch_size {m['sw_batch_size']})", "", _md(headers, rows), "",
                      "One timed run after one warm-up batch of windows; memory as in training (baseline: network "
                      "built and volume loaded).", ""]

    sp = report.get("speed")
    if sp is not None:
        parts += _render_speed(sp, m)
    elif "speed" in report["sections"] and m["device"] != "cpu":
        parts += ["### CPU speed options", "", "Skipped: the profile ran on a GPU.", ""]
    return "\n".join(parts).rstrip() + "\n"


def _verdict(option: str, speedups: Sequence[float], rel: float) -> str:
    """``helps`` only if every speed-up estimate (median of pair ratios, ratio of medians) is >= 1.05."""
    tol = 5e-2 if "bf16" in option else 1e-4
    if rel > tol:
        return f"off (outputs differ by {rel:.1e})"
    if min(speedups) >= 1.05:
        return "helps here"
    if max(speedups) <= 0.95:
        return "slower here: off"
    return "no consistent gain: off"


def _render_speed(sp: dict[str, Any], m: dict[str, Any]) -> list[str]:
    if not _ok(sp):
        return ["### CPU speed options", "", f"Not measured: {sp.get('status')}", ""]
    peak = max(g for g in (sp["gemm_fp32_gflops"], m.get("gemm_peak_gflops") or 0) if g)
    support = sp["bf16_support"]
    parts = ["### CPU speed options (`common.training.cpu`)", "",
             f"fp32 GEMM ({sp['gemm_size']}^2) in this process: {sp['gemm_fp32_gflops']:.1f} GFLOP/s with "
             f"{sp['threads']} thread(s). "
             f"bf16: oneDNN kernels {'yes' if support['mkldnn_bf16'] else 'no'}, native hardware "
             f"(avx512_bf16/AMX) {'yes' if support['native'] else 'no'}.", ""]
    rows = [[layout, f"{g:.1f}", f"{100 * g / peak:.0f}%"] for layout, g in sp["conv"].items()]
    parts += [_md([f"one 3x3x3 conv 32->32 ch, {sp['conv_size']}^3, batch 1", "GFLOP/s", "% of GEMM peak"], rows), ""]
    c = sp["conv"]
    if c.get("contiguous"):
        parts.append(f"channels-last vs contiguous on this conv: x{c['channels_last'] / c['contiguous']:.2f}.")
        parts.append("")
    rows = []
    for r in sp["ab"]:
        of_medians = r["baseline_s"] / r["option_s"]
        rows.append([r["option"], r.get("mode", "train"), f"{r['arch']} {r['variant']}", r["batch"],
                     f"{r['baseline_s']:.3f}",
                     f"{r['option_s']:.3f}", f"x{r['speedup']:.2f}", f"x{of_medians:.2f}", f"{r['max_rel_diff']:.1e}",
                     f"{r['loss_rel_diff']:.1e}", _verdict(r["option"], (r["speedup"], of_medians), r["max_rel_diff"])])
    parts += [_md(["option", "step", "network", "batch", "baseline s/step", "with option s/step",
                   "speed-up (median of pairs)",
                   "speed-up (ratio of medians)", "max rel. output diff", "rel. loss diff", "verdict"], rows), "",
              "Steps at the speed patch: `train` = forward, loss, backward, Adam; `infer` = forward only (eval, "
              "no_grad, same batch). Baseline = fp32, contiguous (NCDHW), the profile's thread "
              "count (thread row: all cores). Baseline and option alternate step by step; 'helps' needs both "
              "speed-up estimates >= 1.05. Output diff = max |out - ref| / max |ref| on a fixed batch (eval "
              "mode, same weights).", ""]
    if sp.get("sw"):
        secs = sp["sw"]["seconds"]
        b1 = secs.get("1")
        rows = [[b, f"{t:.2f}", f"x{b1 / t:.2f}" if b1 else "–"] for b, t in secs.items()]
        vol = "x".join(map(str, sp["sw"]["volume"]))
        parts += [_md([f"sw_batch_size ({sp['sw']['arch']} pocket, {vol} volume)", "s/volume", "speed-up vs 1"],
                      rows), ""]
    return parts


def write_csv(report: dict[str, Any], path: str) -> str:
    """One row per measurement (see ``CSV_COLUMNS``); ratios are left to the reader's spreadsheet."""
    m = report["meta"]
    patch = "x".join(map(str, m["patch"]))
    peak = m.get("gemm_peak_gflops")
    rows: list[dict[str, Any]] = []
    for (a, v), s in report["stats"].items():
        rows.append({"section": "size", "arch": a, "variant": v, "patch": patch, "batch": 1, "params": s["params"],
                     "gmac_forward": s["macs_forward"] / 1e9, "status": "ok"})
    for (a, b, v), r in report["train"].items():
        row: dict[str, Any] = {"section": "train", "arch": a, "variant": v, "patch": patch, "batch": b,
                               "status": r.get("status")}
        if _ok(r):
            st = report["stats"].get((a, v))
            g = _gflops(st["macs_train"] * b if st else None, r["median_s"])
            row.update(step_peak_mib=r["delta_mib"], process_peak_mib=r["peak_mib"], baseline_mib=r["baseline_mib"],
                       step_median_s=r["median_s"], step_mean_s=r["mean_s"], gflops=g,
                       pct_gemm_peak=100 * g / peak if g and peak else None, memory_method=r["memory_method"])
        rows.append(row)
    for (a, v), r in report["infer"].items():
        if _ok(r) and r.get("sw"):
            sw = r["sw"]
            rows.append({"section": "sliding_window", "arch": a, "variant": v, "patch": patch, "batch": 1,
                         "sw_volume": "x".join(map(str, m["volume"])), "sw_batch_size": m["sw_batch_size"],
                         "sw_time_s": sw["time_s"], "sw_peak_mib": sw["delta_mib"], "process_peak_mib": sw["peak_mib"],
                         "baseline_mib": sw["baseline_mib"], "memory_method": sw["memory_method"], "status": "ok"})
        for s in m["sizes"]:
            t = r.get("throughput", {}).get(str(s)) if _ok(r) else None
            macs = report["fwd_macs"].get((a, v, s))
            g = macs * 2 * t["images_per_s"] / 1e9 if t and macs else None
            rows.append({"section": "throughput", "arch": a, "variant": v, "patch": patch, "batch": 1, "size": s,
                         "images_per_s": t["images_per_s"] if t else None,
                         "step_median_s": t["median_s"] if t else None, "gflops": g,
                         "pct_gemm_peak": 100 * g / peak if g and peak else None,
                         "status": "ok" if t else r.get("status", "not run")})
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=CSV_COLUMNS)
        w.writeheader()
        for row in rows:
            w.writerow({k: ("" if row.get(k) is None else row.get(k)) for k in CSV_COLUMNS})
    return path


if __name__ == "__main__":
    fire.Fire(profile)
