"""A/B timing of one CPU speed option on the networks the bundle configs build.

``pocket profile`` measures the options on the 3D segmenters; this command measures them on any
bundle's own ``network`` (2D classifier, ELU-Net with the up-scaling head, ...), built from its
``configs/train.json`` with the option off and on, same weights::

    pocket cpu_options                                   # channels_last, the two 2D bundles
    pocket cpu_options --option bf16 --bundles nfbs_brain_mri_segmentation --shape 1,1,64,64,64

Per bundle: the output difference (eval, max |on - off| / max |off|), then interleaved pairs of a
training step (forward, mean of the output, backward; no optimiser) and of an inference forward pass
(eval, no_grad); the speed-up is the median of the per-pair ratios. One thread unless ``--threads``.
"""

from __future__ import annotations

import statistics
import sys
import time
from typing import Any

import torch
from monai.bundle import ConfigParser

from common import BUNDLES_DIR
from common.errors import InvalidInputError

BUNDLES = BUNDLES_DIR
DEFAULT_SHAPES = {
    "covidx_cxr_classification": (8, 1, 256, 256),  # a quarter of the default batch, at the default size
    "prostate_mri_segmentation": (4, 1, 80, 80),  # the default batch at the default input size
}


def bundle_network(bundle: str, **keys: Any) -> torch.nn.Module:
    """``network`` of ``bundles/<bundle>/configs/train.json`` with config ``keys`` overridden."""
    parser = ConfigParser()
    parser.read_config(str(BUNDLES / bundle / "configs" / "train.json"))
    parser["bundle_root"] = str(BUNDLES / bundle)
    parser["cpu_threads"] = None  # threads are set once by this command
    for key, value in keys.items():
        parser[key] = value
    return parser.get_parsed_content("network")


def _first(out: Any) -> torch.Tensor:
    return out[0] if isinstance(out, (list, tuple)) else out


def _step(net: torch.nn.Module, x: torch.Tensor, train: bool) -> float:
    t0 = time.perf_counter()
    if train:
        net.train()
        _first(net(x)).float().mean().backward()
    else:
        net.eval()
        with torch.no_grad():
            net(x)
    return time.perf_counter() - t0


def ab(bundle: str, shape: tuple[int, ...], option: str = "channels_last", pairs: int = 5) -> dict[str, Any]:
    """Output difference and train/infer speed-ups of ``option`` on ``bundle``'s network at ``shape``."""
    off = {"channels_last": False, "bf16": False}
    base = bundle_network(bundle, **off)
    other = bundle_network(bundle, **{**off, option: True})
    other.load_state_dict(base.state_dict())
    x = torch.randn(*shape, generator=torch.Generator().manual_seed(0))
    base.eval()
    other.eval()
    with torch.no_grad():
        ref, out = _first(base(x)).float(), _first(other(x)).float()
    res: dict[str, Any] = {"bundle": bundle, "shape": list(shape), "option": option,
                           "max_rel_diff": float((out - ref).abs().max() / ref.abs().max().clamp_min(1e-12))}
    for mode in ("train", "infer"):
        _step(base, x, mode == "train")
        _step(other, x, mode == "train")
        ta, tb = [], []
        for _ in range(pairs):
            ta.append(_step(base, x, mode == "train"))
            tb.append(_step(other, x, mode == "train"))
        res[mode] = {"baseline_s": statistics.median(ta), "option_s": statistics.median(tb),
                     "speedup": statistics.median(a / b for a, b in zip(ta, tb))}
    return res


def cpu_options(bundles: Any = None, option: str = "channels_last", shape: Any = None, pairs: int = 5,
         threads: int = 1) -> None:
    """A/B one CPU speed option (channels_last or bf16) on each bundle's own network; prints a table."""
    if option not in ("channels_last", "bf16"):
        raise InvalidInputError(f"option must be 'channels_last' or 'bf16', got {option!r}.")
    names = [b for b in str(bundles).replace(" ", "").split(",") if b] if bundles else list(DEFAULT_SHAPES)
    if shape is not None:
        shape = tuple(int(s) for s in (shape if isinstance(shape, (list, tuple)) else str(shape).split(",")))
    torch.set_num_threads(int(threads))
    print(f"| bundle | input | step | baseline s | {option} s | speed-up (median of {pairs} pairs) "
          "| max rel. output diff |")
    print("|---|---|---|---|---|---|---|")
    for b in names:
        s = shape or DEFAULT_SHAPES.get(b)
        if s is None:
            raise InvalidInputError(f"no default input shape for {b}; pass --shape N,C,...")
        r = ab(b, s, option, pairs)
        for mode in ("train", "infer"):
            m = r[mode]
            print(f"| {b} | {'x'.join(map(str, s))} | {mode} | {m['baseline_s']:.3f} | {m['option_s']:.3f} | "
                  f"x{m['speedup']:.2f} | {r['max_rel_diff']:.1e} |", flush=True)
    print(f"threads {torch.get_num_threads()}", file=sys.stderr)
