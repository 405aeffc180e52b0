"""GMac and parameter table of U-Net, ELU-Net and ELU-Net + up-scaling head (the paper's Table IV).

Usage::

    python -m common.benchmarks.complexity table                 # Markdown table, 1 input channel, 1 class, batch 1
    python -m common.benchmarks.complexity table --num_classes=2

MACs are counted with forward hooks on the leaf modules during one forward pass (eval mode, batch 1), with
two rules:

* ``"ptflops"`` -- the rule of ptflops <= 0.7.4, which produced the paper's ELU-Net figures: convolutions
  count ``output positions * prod(kernel) * in_channels/groups * out_channels``, and so do *transposed*
  convolutions (over their output positions: 4x too many for kernel 2 / stride 2, since each input position
  drives one 2x2 output block). Plus ptflops' extras: one per output element for each bias, input numel
  (x2 when affine) for BatchNorm, output numel for ReLU-family activations, input numel for pooling, output
  numel for ``nn.Upsample``; ``Linear`` counts ``in * out`` per row.
* ``"true"`` -- weight multiply-accumulates only: convolutions as above, transposed convolutions over their
  *input* positions (what ptflops >= 0.7.5 does), ``Linear`` ``in * out`` per row; no extras.

Functional ops (``torch.cat``, ``F.interpolate``) are not counted; a module called twice counts twice.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import fire
import torch
import torch.nn as nn

from common.networks.elunet import DoubleConv, ELUNet
from common.networks.upscale_head import UpscaleHead

__all__ = ["count_macs", "head_stages", "PlainUNet", "table"]

_CONV = (nn.Conv1d, nn.Conv2d, nn.Conv3d)
_CONVT = (nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d)
_NORM = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)
_ACT = (nn.ReLU, nn.ReLU6, nn.ELU, nn.LeakyReLU, nn.PReLU)
_POOL = (nn.MaxPool1d, nn.MaxPool2d, nn.MaxPool3d, nn.AvgPool1d, nn.AvgPool2d, nn.AvgPool3d)
RULES = ("ptflops", "true")

# the paper's Table IV (GMac, 1 channel, 1 class), keyed by input side
PAPER_UNET = {320: 71.16, 160: 17.79, 80: 4.45, 32: 0.71, 16: 0.18}
PAPER_ELUNET = {320: 29.98, 160: 7.5, 80: 1.87, 32: 0.30, 16: 0.07}
PAPER_HEAD = {160: 7.5, 80: 1.88, 32: 0.30, 16: 0.08}
# input side -> side of the ground truth / head output (the paper: 320 GT, 256 for the smallest inputs)
OUTPUT_SIDE = {320: 320, 160: 320, 80: 320, 32: 256, 16: 256}


def count_macs(model: nn.Module, input_shape: Sequence[int], rule: str = "true") -> int:
    """MACs of one forward pass of ``model`` on a zero tensor of shape ``(1, *input_shape)`` under ``rule``
    (``"ptflops"`` or ``"true"``, see the module docstring).

    The input is created on the device of the model's parameters; a model built on the ``"meta"`` device
    (``with torch.device("meta"): ...``) is counted from shapes alone, without computing anything.
    """
    if rule not in RULES:
        raise ValueError(f"rule must be one of {RULES}, got {rule!r}.")
    ptflops = rule == "ptflops"
    total = [0]

    def hook(module: nn.Module, inputs: tuple[torch.Tensor, ...], output: torch.Tensor) -> None:
        x = inputs[0]
        if isinstance(module, _CONV + _CONVT):
            at_input = isinstance(module, _CONVT) and not ptflops
            positions = x[0, 0].numel() if at_input else output[0, 0].numel()
            total[0] += (
                positions * math.prod(module.kernel_size) * (module.in_channels // module.groups) * module.out_channels
            )
            if ptflops and module.bias is not None:
                total[0] += output[0].numel()
        elif isinstance(module, nn.Linear):
            total[0] += x[0].numel() * module.out_features
            if ptflops and module.bias is not None:
                total[0] += output[0].numel()
        elif not ptflops:
            return
        elif isinstance(module, _NORM):
            total[0] += x[0].numel() * (2 if module.affine else 1)
        elif isinstance(module, _ACT):
            total[0] += output[0].numel()
        elif isinstance(module, _POOL):
            total[0] += x[0].numel()
        elif isinstance(module, nn.Upsample):
            total[0] += output[0].numel()

    param = next(model.parameters(), None)
    device = param.device if param is not None else torch.device("cpu")
    handles = [m.register_forward_hook(hook) for m in model.modules() if not list(m.children())]
    was_training = model.training
    try:
        model.eval()
        with torch.no_grad():
            model(torch.zeros(1, *input_shape, device=device))
    finally:
        model.train(was_training)
        for h in handles:
            h.remove()
    return total[0]


class PlainUNet(nn.Module):
    """Plain padded 2D U-Net as the paper's baseline [Ronneberger et al.]: widths f, 2f, ..., 16f (f=64),
    4 max-poolings, conv-BN-ReLU x2 nodes without conv bias, ConvTranspose(c, c/2, 2, 2) up-steps, 1x1 output.

    Only used for the complexity table (the milesial/Pytorch-UNet layout; 31.04 M parameters). The paper's
    71.16 GMac cannot be reproduced by any padded 4-pooling U-Net (see the research notes), so this row
    states our own network and counting rule instead.
    """

    def __init__(self, in_channels: int = 1, out_channels: int = 1, features: int = 64, depth: int = 4) -> None:
        super().__init__()
        w = [features * 2**i for i in range(depth + 1)]
        self.encoder = nn.ModuleList(
            [DoubleConv(2, in_channels, w[0], bias=False)]
            + [nn.Sequential(nn.MaxPool2d(2), DoubleConv(2, w[i], w[i + 1], bias=False)) for i in range(depth)]
        )
        self.ups = nn.ModuleList([nn.ConvTranspose2d(w[i + 1], w[i], 2, stride=2) for i in range(depth - 1, -1, -1)])
        self.decoder = nn.ModuleList([DoubleConv(2, w[i + 1], w[i], bias=False) for i in range(depth - 1, -1, -1)])
        self.final_conv = nn.Conv2d(w[0], out_channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skips: list[torch.Tensor] = []
        for block in self.encoder:
            x = block(x)
            skips.append(x)
        skips.pop()
        for up, node in zip(self.ups, self.decoder):
            x = node(torch.cat([skips.pop(), up(x)], dim=1))
        return self.final_conv(x)


def _factory_unet(num_classes: int) -> nn.Module | None:
    """The project's own 2D U-Net (init 16, depth 4), if ``common.networks.get_network`` exists yet."""
    try:
        from common.networks import get_network  # written by another work package
    except ImportError:
        return None
    return get_network("unet", 2, 1, num_classes, init_filters=16, depth=4, pocket=False, style="short")


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:g}"


def table(num_classes: int = 1, sizes: Sequence[int] = (320, 160, 80, 32, 16), stage_skips: bool = False) -> str:
    """Markdown table (returned; the CLI prints it) of parameters and GMac under both rules for U-Net,
    ELU-Net n=16 and ELU-Net n=16 + head.

    The head gets as many x2 stages as needed to reach the paper's ground-truth side (320 for inputs
    320/160/80, 256 for 32/16). ``stage_skips`` adds a row for the head variant with skip connections.
    """

    def no_head(side: int) -> int:
        return 0

    # (name, builder(side) -> model or None when unavailable, head stages(side), paper's GMac per side)
    rows: list[tuple[str, Callable[[int], nn.Module | None], Callable[[int], int], dict[int, float]]] = [
        ("U-Net f=64 (ConvT, BN; paper's baseline)", lambda s: PlainUNet(1, num_classes), no_head, PAPER_UNET),
        ("U-Net f=16 (common.networks factory)", lambda s: _factory_unet(num_classes), no_head, {}),
        ("ELU-Net n=16", lambda s: ELUNet(2, 1, num_classes, 16), no_head, PAPER_ELUNET),
        ("ELU-Net n=16 + head", lambda s: _with_head(s, num_classes, False), head_stages, PAPER_HEAD),
    ]
    if stage_skips:
        rows.append(("ELU-Net n=16 + head (stage skips)", lambda s: _with_head(s, num_classes, True), head_stages, {}))

    lines = [
        f"Input: 1 channel, batch 1, {num_classes} class(es). GMac = 1e9 multiply-accumulates.",
        "ptflops rule = ptflops <= 0.7.4: ConvTranspose counted over its output positions, plus bias, BatchNorm,",
        "ReLU and pooling extras. true = weight MACs only, ConvTranspose counted over its input positions.",
        "",
        "| model | input | output | head stages | params | GMac (ptflops <= 0.7.4 rule) | GMac (true MACs) "
        "| paper Table IV |",
        "|---|---|---|---|---|---|---|---|",
    ]
    skipped: list[str] = []
    for name, build, n_stages, paper in rows:
        for side in sizes:
            with torch.device("meta"):  # shapes only: no weights are initialised, nothing is computed
                model = build(side)
            if model is None:
                skipped.append(name)
                break
            stages = n_stages(side)
            params = sum(p.numel() for p in model.parameters())
            g_pt = count_macs(model, (1, side, side), "ptflops") / 1e9
            g_true = count_macs(model, (1, side, side), "true") / 1e9
            out = side * 2**stages
            lines.append(
                f"| {name} | {side} | {out} | {stages} | {params:,} | {g_pt:.3f} | {g_true:.3f} "
                f"| {_fmt(paper.get(side))} |"
            )
    for name in skipped:
        lines.append(f"\n{name}: not available (common.networks.get_network does not import yet).")
    return "\n".join(lines)


def head_stages(side: int) -> int:
    """Number of x2 head stages from input ``side`` to the paper's ground-truth side (``OUTPUT_SIDE``)."""
    stages = int(round(math.log2(OUTPUT_SIDE.get(side, side) / side)))
    return max(stages, 0)


def _with_head(side: int, num_classes: int, stage_skips: bool) -> nn.Module:
    backbone = ELUNet(2, 1, num_classes, 16)
    return UpscaleHead(backbone, num_classes, head_stages(side), spatial_dims=2, stage_skips=stage_skips)


if __name__ == "__main__":
    fire.Fire({"table": table})
