"""Model complexity: parameters against the PocketNet papers' tables, and MACs (multiply-accumulates).

``count_macs(model, input_shape, rule)`` counts one image (batch 1) under one of three rules:

* ``"ptflops"`` -- the rule of ptflops <= 0.7.4, which produced the GMac figures of Ostrowski & Shafique,
  "Embedded Deployment of Semantic Segmentation in Medicine through Low-Resolution Inputs" (their Table IV).
  Forward hooks on the leaf modules, eval mode: convolutions count ``output positions * prod(kernel) *
  in_channels/groups * out_channels``, and so do *transposed* convolutions (over their output positions: 4x
  too many for kernel 2 / stride 2, since each input position drives one 2x2 output block). Plus ptflops'
  extras: one per output element for each bias, input numel (x2 when affine) for BatchNorm, output numel for
  ReLU-family activations, input numel for pooling, output numel for ``nn.Upsample``; ``Linear`` counts
  ``in * out`` per row. Functional ops (``torch.cat``, ``F.interpolate``) are not counted; a module called
  twice counts twice.
* ``"forward"`` -- the true MACs of one forward pass (eval mode): ``torch.utils.flop_counter`` FLOPs / 2,
  i.e. weight multiply-accumulates of convolutions (transposed ones over their *input* positions, as
  ptflops >= 0.7.5 does) and matrix products; normalisation, activations, pooling, up-sampling and
  element-wise ops add nothing.
* ``"forward_backward"`` -- the same for a training step without the optimizer (train mode): forward plus the
  backward pass of ``sum(output)``, i.e. the convolution gradients actually computed (no input gradient for
  the image).

A model built on the ``"meta"`` device (``with torch.device("meta"): ...``) is counted from shapes alone,
without computing anything. ``complexity(table=...)`` prints the parameter table, the GMac table, or both.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.nn as nn
from torch.utils.flop_counter import FlopCounterMode

from common.errors import InvalidInputError
from common.inference.lowres_slices import head_stages
from common.networks import count_parameters, get_network

__all__ = ["RULES", "TABLES", "complexity", "count_macs", "gmac_table", "parameter_table", "sum_outputs"]

RULES = ("ptflops", "forward", "forward_backward")
TABLES = ("params", "gmacs", "all")

_CONV = (nn.Conv1d, nn.Conv2d, nn.Conv3d)
_CONVT = (nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d)
_NORM = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)
_ACT = (nn.ReLU, nn.ReLU6, nn.ELU, nn.LeakyReLU, nn.PReLU)
_POOL = (nn.MaxPool1d, nn.MaxPool2d, nn.MaxPool3d, nn.AvgPool1d, nn.AvgPool2d, nn.AvgPool3d)


def count_macs(model: nn.Module, input_shape: Sequence[int], rule: str = "forward") -> int:
    """MACs of ``model`` on a zero tensor of shape ``(1, *input_shape)`` under ``rule`` (one of ``RULES``, see
    the module docstring).

    The input is created on the device of the model's parameters; the model's train/eval mode is restored.
    """
    if rule not in RULES:
        raise InvalidInputError(f"rule must be one of {RULES}, got {rule!r}.")
    param = next(model.parameters(), None)
    x = torch.zeros(1, *input_shape, device=param.device if param is not None else torch.device("cpu"))
    was_training = model.training
    try:
        if rule == "ptflops":
            return _ptflops_macs(model.eval(), x)
        counter = FlopCounterMode(display=False)
        if rule == "forward":
            model.eval()
            with counter, torch.no_grad():
                model(x)
        else:
            model.train()
            with counter:
                sum_outputs(model(x)).backward()
        return counter.get_total_flops() // 2
    finally:
        model.train(was_training)


def sum_outputs(out: Any) -> torch.Tensor:
    """One scalar from a tensor, or from a list/tuple/dict of them (e.g. every scale of the up-scaling head)."""
    if isinstance(out, torch.Tensor):
        return out.float().sum()
    if isinstance(out, dict):
        out = list(out.values())
    return sum(sum_outputs(o) for o in out)


def _ptflops_macs(model: nn.Module, x: torch.Tensor) -> int:
    """The ptflops <= 0.7.4 rule, by forward hooks on the leaf modules."""
    total = [0]

    def hook(module: nn.Module, inputs: tuple[torch.Tensor, ...], output: torch.Tensor) -> None:
        x = inputs[0]
        if isinstance(module, _CONV + _CONVT):
            positions = output[0, 0].numel()
            total[0] += (
                positions * math.prod(module.kernel_size) * (module.in_channels // module.groups) * module.out_channels
            )
            if module.bias is not None:
                total[0] += output[0].numel()
        elif isinstance(module, nn.Linear):
            total[0] += x[0].numel() * module.out_features
            if module.bias is not None:
                total[0] += output[0].numel()
        elif isinstance(module, _NORM):
            total[0] += x[0].numel() * (2 if module.affine else 1)
        elif isinstance(module, _ACT):
            total[0] += output[0].numel()
        elif isinstance(module, _POOL):
            total[0] += x[0].numel()
        elif isinstance(module, nn.Upsample):
            total[0] += output[0].numel()

    handles = [m.register_forward_hook(hook) for m in model.modules() if not list(m.children())]
    try:
        with torch.no_grad():
            model(x)
    finally:
        for h in handles:
            h.remove()
    return total[0]


# ---------------------------------------------------------------- parameters against the PocketNet papers

# (label, get_network arguments, paper's figure)
PARAMETER_ROWS: list[tuple[str, dict[str, Any], str]] = []
_TMI = {"spatial_dims": 3, "in_channels": 1, "out_channels": 2, "init_filters": 32, "depth": 5}
for _arch, _full, _pocket in [("unet", "90.5M", "0.8M"), ("resnet", "91.9M", "0.8M"),
                              ("densenet", "135.9M", "1.3M"), ("hrnet", "6.5M", "0.7M"),
                              ("nnunet", "31.2M", "0.8M")]:
    PARAMETER_ROWS.append((f"Table I  {_arch} full", {"arch": _arch, **_TMI}, _full))
    PARAMETER_ROWS.append((f"Table I  {_arch} pocket", {"arch": _arch, "pocket": True, **_TMI}, _pocket))
_CLS = {"arch": "classifier", "spatial_dims": 2, "in_channels": 1, "out_channels": 2, "init_filters": 16,
        "depth": 4, "style": "short"}
PARAMETER_ROWS += [("Table II classifier full", _CLS, "1.2M"),
                   ("Table II classifier pocket", {**_CLS, "pocket": True}, "0.02M")]
for _level, _paper in zip(range(5, -1, -1), ["90.5M", "60.0M", "24.3M", "8.40M", "2.60M", "0.80M"]):
    PARAMETER_ROWS.append((f"Table IV unet doubling up to level {_level}",
                           {"arch": "unet", "double_until": _level, **_TMI}, _paper))
_SHORT = {"spatial_dims": 3, "in_channels": 1, "out_channels": 2, "init_filters": 16, "depth": 4, "style": "short",
          "scale": (1, 2, 2)}
for _arch, _full, _pocket in [("unet", "5.5M", "0.150M"), ("resnet", "5.5M", "0.150M"),
                              ("densenet", "8.1M", "0.241M")]:
    PARAMETER_ROWS.append((f"short paper 3D NFBS {_arch} full", {"arch": _arch, **_SHORT}, _full))
    PARAMETER_ROWS.append((f"short paper 3D NFBS {_arch} pocket", {"arch": _arch, "pocket": True, **_SHORT}, _pocket))


def parameter_table() -> str:
    """Markdown table: network, our exact parameter count, the PocketNet papers' figure.

    Tables I, II and IV are the long paper's (Celaya et al., "PocketNet: A Smaller Neural Network for Medical
    Image Analysis", IEEE TMI 2022), the last rows the short (MICCAI workshop) paper's 3D NFBS networks.
    """
    lines = ["| network | ours | paper |", "|---|---:|---:|"]
    for label, kwargs, paper in PARAMETER_ROWS:
        with torch.device("meta"):  # shapes only: the full networks are built in no time
            n = count_parameters(get_network(**kwargs))
        lines.append(f"| {label} | {n:,} | {paper} |")
    return "\n".join(lines)


# ---------------------------------------------------------------- GMac of the low-resolution study

# Ostrowski & Shafique's Table IV (GMac, 1 channel, 1 class), keyed by input side
PAPER_UNET = {320: 71.16, 160: 17.79, 80: 4.45, 32: 0.71, 16: 0.18}
PAPER_ELUNET = {320: 29.98, 160: 7.5, 80: 1.87, 32: 0.30, 16: 0.07}
PAPER_HEAD = {160: 7.5, 80: 1.88, 32: 0.30, 16: 0.08}
GT_SIDE = 320  # the paper's ground truth; the head's output is the largest input * 2**k that fits (320 or 256)


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:g}"


def gmac_table(num_classes: int = 1, sizes: int | Sequence[int] = (320, 160, 80, 32, 16),
               stage_skips: bool = False) -> str:
    """Markdown table of parameters and GMac under the ``ptflops`` and ``forward`` (true MACs) rules for the
    networks of Ostrowski & Shafique's Table IV, 2D, 1 input channel, batch 1, input side ``sizes``.

    Rows: the plain U-Net of Ronneberger et al. (``unet``, f=64, no conv bias: the milesial/Pytorch-UNet layout
    with 31.04 M parameters; the paper's 71.16 GMac is reproduced by no padded 4-pooling U-Net, so this row
    states our network and counting rule), PocketNet's U-Net f=16 (short style), ELU-Net n=16, and ELU-Net
    n=16 + the up-scaling head with as many x2 stages as reach the paper's ground-truth side (320 for inputs
    320/160/80, 256 for 32/16). ``stage_skips`` adds a row for the head with skip connections.
    """
    sizes = (sizes,) if isinstance(sizes, int) else tuple(sizes)

    def net(arch: str, init_filters: int, head: bool = False, skips: bool = False, **kw: Any) -> Callable:
        def build(side: int) -> nn.Module:
            stages = head_stages(GT_SIDE, side) if head else None
            return get_network(arch, 2, 1, num_classes, init_filters=init_filters, depth=4, head_stages=stages,
                               stage_skips=skips, **kw)

        return build

    # (name, builder(side), head?, paper's GMac per side)
    rows: list[tuple[str, Callable[[int], nn.Module], bool, dict[int, float]]] = [
        ("U-Net f=64 (ConvT, BN; paper's baseline)", net("unet", 64, bias=False), False, PAPER_UNET),
        ("U-Net f=16 (PocketNet, short style)", net("unet", 16, style="short"), False, {}),
        ("ELU-Net n=16", net("elunet", 16), False, PAPER_ELUNET),
        ("ELU-Net n=16 + head", net("elunet", 16, head=True), True, PAPER_HEAD),
    ]
    if stage_skips:
        rows.append(("ELU-Net n=16 + head (stage skips)", net("elunet", 16, head=True, skips=True), True, {}))

    lines = [
        f"Input: 1 channel, batch 1, {num_classes} class(es). GMac = 1e9 multiply-accumulates.",
        "ptflops rule = ptflops <= 0.7.4: ConvTranspose counted over its output positions, plus bias, BatchNorm,",
        "ReLU and pooling extras. true = weight MACs only, ConvTranspose counted over its input positions.",
        "",
        "| model | input | output | head stages | params | GMac (ptflops <= 0.7.4 rule) | GMac (true MACs) "
        "| paper Table IV |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, build, head, paper in rows:
        for side in sizes:
            with torch.device("meta"):  # shapes only: no weights are initialised, nothing is computed
                model = build(side)
            stages = head_stages(GT_SIDE, side) if head else 0
            g_pt = count_macs(model, (1, side, side), "ptflops") / 1e9
            g_true = count_macs(model, (1, side, side), "forward") / 1e9
            lines.append(
                f"| {name} | {side} | {side * 2**stages} | {stages} | {count_parameters(model):,} | {g_pt:.3f} "
                f"| {g_true:.3f} | {_fmt(paper.get(side))} |"
            )
    return "\n".join(lines)


def complexity(table: str = "all", num_classes: int = 1, sizes: int | Sequence[int] = (320, 160, 80, 32, 16),
               stage_skips: bool = False) -> str:
    """Parameter counts against the papers and GMac under two counting rules, as Markdown tables.

    ``table="params"`` (``parameter_table``), ``"gmacs"`` (``gmac_table(num_classes, sizes, stage_skips)``) or
    ``"all"`` (both, parameters first).
    """
    if table not in TABLES:
        raise InvalidInputError(f"table must be one of {TABLES}, got {table!r}.")
    parts = []
    if table in ("params", "all"):
        parts.append(parameter_table())
    if table in ("gmacs", "all"):
        parts.append(gmac_table(num_classes, sizes, stage_skips))
    return "\n\n".join(parts)
