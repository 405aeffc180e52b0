"""How much of its last feature maps a network uses: mean activation per channel, full against pocket (Fig. 4).

Celaya et al., "PocketNet: A Smaller Neural Network for Medical Image Analysis" (IEEE TMI 2022), Fig. 4: the
per-channel mean activation of the feature maps that enter the final 1x1 convolution (the voxel-wise classifier),
over the test cases, sorted, for a full and a pocket network. This module reads the trained runs of
``pocket experiment table1`` (each fold's model on its own validation cases, as in the table), records the input of
that convolution with a forward hook while the bundle's own preprocessing and inferer run, and plots the sorted
means::

    pocket experiment activations --out /tmp/pocketnet_table1 --arch unet

With sliding-window inference the hook sees every window, overlaps included: the mean is over all voxels of all
windows of all cases. Written to ``out``: ``activations_<arch>.png`` and ``activations_<arch>.csv``.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from common import REPO_ROOT
from common.errors import InvalidInputError

__all__ = ["channel_means", "final_conv", "run"]


def final_conv(network: nn.Module) -> nn.Module:
    """The network's last 1x1(x1) convolution in module order: the voxel-wise classifier."""
    found = [m for m in network.modules()
             if isinstance(m, nn.Conv2d | nn.Conv3d) and all(k == 1 for k in m.kernel_size)]
    if not found:
        raise InvalidInputError(f"{type(network).__name__} has no 1x1 convolution to record the input of.")
    return found[-1]


def _bundle_parts(run_dir: Path) -> tuple[nn.Module, list[dict[str, Any]], Any, Any]:
    """The run's network (its model.pt loaded), validation cases, preprocessing and inferer, from its configs.

    The network is the bundle's ``network`` (``network_def`` with its CPU options), the one its evaluation runs.
    """
    from monai.bundle import ConfigParser

    spec = json.loads((run_dir / "run.json").read_text())
    configs = REPO_ROOT / "bundles" / spec["bundle"] / "configs"
    parser = ConfigParser()
    parser.read_config([str(configs / f) for f in spec["evaluate"]])
    for key, value in {**spec["overrides"], "bundle_root": str(run_dir), "device": "$torch.device('cpu')"}.items():
        parser[key] = value
    network = parser.get_parsed_content("network")  # with the bundle's CPU options (bf16 where native), as evaluated
    network.load_state_dict(torch.load(run_dir / "models" / "model.pt", map_location="cpu", weights_only=True))
    network.eval()
    return (network, parser.get_parsed_content("validate#data"), parser.get_parsed_content("validate#preprocessing"),
            parser.get_parsed_content("validate#inferer"))


def channel_means(run_dir: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel sum and voxel count of the final convolution's input over the run's validation cases."""
    network, cases, preprocessing, inferer = _bundle_parts(Path(run_dir))
    sums: list[torch.Tensor] = []
    count = [0]

    def record(_module: nn.Module, inputs: tuple[torch.Tensor, ...]) -> None:
        x = inputs[0].detach().double()
        sums.append(x.transpose(0, 1).reshape(x.shape[1], -1).sum(dim=1))
        count[0] += x.numel() // x.shape[1]

    handle = final_conv(network).register_forward_pre_hook(record)
    try:
        with torch.no_grad():
            for case in cases:
                image = preprocessing(dict(case))["image"]
                inferer(torch.as_tensor(image)[None], network)
    finally:
        handle.remove()
    return torch.stack(sums).sum(dim=0).numpy(), np.array(count[0])


def run(out: str = "/tmp/pocketnet_table1", arch: str = "unet", variants: str = "full,pocket") -> str:
    """Sorted per-channel mean activations of ``arch``'s full and pocket runs of a table1 folder; plot and CSV."""
    from common.experiments.inputs import csv_list

    work = Path(out)
    means: dict[str, np.ndarray] = {}
    for variant in csv_list(variants):
        folds = sorted((work / "runs" / f"{arch}-{variant}").glob("fold*/finished.json"))
        if not folds:
            raise InvalidInputError(f"{work / 'runs' / f'{arch}-{variant}'} has no finished run: run "
                                    f"pocket experiment table1 --out {work} first.")
        total, voxels = 0.0, 0
        for f in folds:
            s, n = channel_means(f.parent)
            total, voxels = total + s, voxels + int(n)
        means[variant] = total / voxels
    rows = [{"variant": v, "rank": rank, "channel": int(c), "mean_activation": float(m[c])}
            for v, m in means.items() for rank, c in enumerate(np.argsort(-m))]
    with open(work / f"activations_{arch}.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    _plot(work / f"activations_{arch}.png", means, arch)
    return "\n".join(f"{arch} {v}: {len(m)} channels, sorted means " + ", ".join(f"{x:.3g}" for x in sorted(m)[::-1])
                     for v, m in means.items())


def _plot(path: Path, means: dict[str, np.ndarray], arch: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3.5))
    colours = {"full": "#e6550d", "pocket": "#3182bd"}  # as in the table's box plots
    for variant, m in means.items():
        ax.plot(np.arange(1, len(m) + 1), np.sort(m)[::-1], marker="o", ms=3, label=variant, color=colours[variant])
    ax.set_xlabel("channel (sorted by mean activation)")
    ax.set_ylabel("mean activation")
    ax.set_title(f"{arch}: input of the final 1x1 convolution", fontsize=9)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
