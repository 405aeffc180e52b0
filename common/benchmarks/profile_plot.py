"""Grouped bar charts of training memory and step time, full vs pocket, drawn with matplotlib.

The layout follows Fig. 3 of Celaya et al., "PocketNet: A Smaller Neural Network for Medical Image
Analysis" (IEEE TMI 2022): per network, peak training memory and time per step by batch size, one bar
per variant. matplotlib is the collection's one plotting library; the figure is drawn on an Agg canvas
(no display, no pyplot state), so it works on a headless machine and inside worker processes.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.patches import Patch
from matplotlib.ticker import StrMethodFormatter

COLORS = {"full": "#1f77b4", "pocket": "#ff7f0e"}  # matplotlib's first two cycle colours
OTHER_COLOR = "#787878"
PANEL_W, PANEL_H, HEADER_H = 4.8, 3.0, 0.6  # inches at DPI: one panel, the title and legend band
DPI = 100


def _fmt(v: float) -> str:
    """Bar label: thousands separator for large values, three significant digits for small ones."""
    if v >= 100:
        return f"{v:,.0f}"
    if v >= 10:
        return f"{v:.1f}"
    return f"{v:.2f}"


def _panel(
    ax: Axes, title: str, batches: Sequence[int], values: dict[tuple[int, str], float | None],
    variants: Sequence[str],
) -> None:
    """One grouped bar chart: a group per batch size, a bar per variant, value above each bar, n/a if missing."""
    ax.set_title(title, loc="left", fontsize=10)
    width = 0.7 / max(1, len(variants))
    for k, variant in enumerate(variants):
        for g, b in enumerate(batches):
            x = g - 0.35 + width * (k + 0.5)
            v = values.get((b, variant))
            if v is None:  # a configuration that failed (e.g. out of memory)
                ax.text(x, 0.01, "n/a", transform=ax.get_xaxis_transform(), ha="center", va="bottom",
                        color="gray", fontsize=8)
                continue
            bars = ax.bar(x, v, width * 0.97, color=COLORS.get(variant, OTHER_COLOR))
            ax.bar_label(bars, labels=[_fmt(v)], padding=2, fontsize=8)
    known = [v for v in values.values() if v is not None]
    ax.set_ylim(0, 1.12 * max(known) if known and max(known) > 0 else 1.0)
    ax.set_xlim(-0.5, max(1, len(batches)) - 0.5)
    ax.set_xticks(range(len(batches)), [f"batch {b}" for b in batches], fontsize=9)
    if known and max(known) >= 1000:
        ax.yaxis.set_major_formatter(StrMethodFormatter("{x:,.0f}"))
    ax.tick_params(axis="y", labelsize=8)
    ax.grid(axis="y", color="#e1e1e1")
    ax.set_axisbelow(True)
    ax.spines[["top", "right"]].set_visible(False)


def training_figure(rows: Sequence[dict[str, Any]], path: str, title: str = "") -> str:
    """PNG with, per network, peak training memory (left) and median time per step (right) by batch size.

    ``rows``: dicts with ``arch``, ``variant``, ``batch``, ``step_peak_mib``, ``step_median_s`` (``None``
    where a configuration failed). Returns ``path``.
    """
    archs = list(dict.fromkeys(r["arch"] for r in rows))
    variants = [v for v in ("full", "pocket") if any(r["variant"] == v for r in rows)]
    n = max(1, len(archs))
    fig = Figure(figsize=(2 * PANEL_W, HEADER_H + PANEL_H * n), dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)
    header, body = fig.subfigures(2, 1, height_ratios=[HEADER_H, PANEL_H * n])
    # title and legend in a header band of their own, so neither overlaps the other or a panel
    header.text(0.01, 0.92, title or "Training memory and time per step, full vs pocket", va="top", fontsize=11)
    if variants:
        header.legend(handles=[Patch(color=COLORS[v], label=v) for v in variants], loc="lower left",
                      bbox_to_anchor=(0.0, 0.0), ncols=len(variants), frameon=False, fontsize=9)
    axes = body.subplots(n, 2, squeeze=False)
    for i, arch in enumerate(archs):
        sub = [r for r in rows if r["arch"] == arch]
        batches = sorted({int(r["batch"]) for r in sub})
        mem = {(int(r["batch"]), r["variant"]): r.get("step_peak_mib") for r in sub}
        sec = {(int(r["batch"]), r["variant"]): r.get("step_median_s") for r in sub}
        _panel(axes[i, 0], f"{arch}: peak training memory (MiB)", batches, mem, variants)
        _panel(axes[i, 1], f"{arch}: time per training step (s)", batches, sec, variants)
    if not archs:
        for ax in axes[0]:
            ax.set_axis_off()
        axes[0, 0].text(0, 0.5, "no training measurements", transform=axes[0, 0].transAxes)
    fig.savefig(path, format="png")
    return path
