"""Bar charts in the style of the PocketNet paper's Fig. 3, drawn with Pillow.

Pillow is already a pinned dependency of the collection; two grouped bar charts per network do not
justify matplotlib and its five extra packages.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from PIL import Image, ImageDraw, ImageFont

COLORS = {"full": (31, 119, 180), "pocket": (255, 127, 14)}
PANEL_W, PANEL_H = 480, 300
LEFT, RIGHT, TOP, BOTTOM = 70, 15, 36, 46


def _font(size: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1 has a single bitmap size
        return ImageFont.load_default()


def _nice_max(value: float) -> float:
    """Smallest 1/2/2.5/5 x 10^k at or above ``value`` (axis top)."""
    if value <= 0:
        return 1.0
    exp = 10 ** math.floor(math.log10(value))
    for m in (1, 2, 2.5, 5, 10):
        if m * exp >= value:
            return m * exp
    return 10 * exp


def _fmt(v: float) -> str:
    if v >= 100:
        return f"{v:,.0f}"
    if v >= 10:
        return f"{v:.1f}"
    return f"{v:.2f}"


def _panel(
    draw: ImageDraw.ImageDraw, x0: int, y0: int, title: str, batches: Sequence[int],
    values: dict[tuple[int, str], float | None], variants: Sequence[str],
) -> None:
    """One grouped bar chart: a group per batch size, a bar per variant, value above each bar."""
    font, small = _font(13), _font(11)
    draw.text((x0 + LEFT, y0 + 8), title, fill="black", font=font)
    ax_l, ax_r = x0 + LEFT, x0 + PANEL_W - RIGHT
    ax_t, ax_b = y0 + TOP, y0 + PANEL_H - BOTTOM
    known = [v for v in values.values() if v is not None]
    top = _nice_max(max(known) if known else 1.0)
    for i in range(6):  # y grid and ticks
        v = top * i / 5
        y = ax_b - (ax_b - ax_t) * i / 5
        draw.line([(ax_l, y), (ax_r, y)], fill=(225, 225, 225))
        draw.text((ax_l - 6, y), f"{v:,.{max(0, -math.floor(math.log10(top / 5)))}f}", fill="black", font=small,
                  anchor="rm")
    draw.line([(ax_l, ax_t), (ax_l, ax_b), (ax_r, ax_b)], fill="black")
    group_w = (ax_r - ax_l) / max(1, len(batches))
    bar_w = group_w * 0.7 / max(1, len(variants))
    for g, b in enumerate(batches):
        gx = ax_l + g * group_w + group_w * 0.15
        for k, variant in enumerate(variants):
            v = values.get((b, variant))
            bx = gx + k * bar_w
            if v is None:
                draw.text((bx + bar_w / 2, ax_b - 8), "n/a", fill="gray", font=small, anchor="mb")
                continue
            by = ax_b - (ax_b - ax_t) * v / top
            draw.rectangle([bx, by, bx + bar_w - 2, ax_b], fill=COLORS.get(variant, (120, 120, 120)))
            draw.text((bx + bar_w / 2, by - 2), _fmt(v), fill="black", font=small, anchor="mb")
        draw.text((gx + group_w * 0.35, ax_b + 6), f"batch {b}", fill="black", font=small, anchor="mt")


def training_figure(rows: Sequence[dict[str, Any]], path: str, title: str = "") -> str:
    """PNG with, per network, peak training memory (left) and median time per step (right) by batch size.

    ``rows``: dicts with ``arch``, ``variant``, ``batch``, ``step_peak_mib``, ``step_median_s`` (``None``
    where a configuration failed). Returns ``path``.
    """
    archs = list(dict.fromkeys(r["arch"] for r in rows))
    variants = [v for v in ("full", "pocket") if any(r["variant"] == v for r in rows)]
    header = 52
    img = Image.new("RGB", (2 * PANEL_W, header + PANEL_H * max(1, len(archs))), "white")
    draw = ImageDraw.Draw(img)
    draw.text((10, 8), title or "Training memory and time per step, full vs pocket", fill="black", font=_font(15))
    lx = 10
    for v in variants:  # legend
        draw.rectangle([lx, 32, lx + 14, 44], fill=COLORS[v])
        draw.text((lx + 20, 38), v, fill="black", font=_font(13), anchor="lm")
        lx += 90
    for i, arch in enumerate(archs):
        sub = [r for r in rows if r["arch"] == arch]
        batches = sorted({int(r["batch"]) for r in sub})
        mem = {(int(r["batch"]), r["variant"]): r.get("step_peak_mib") for r in sub}
        sec = {(int(r["batch"]), r["variant"]): r.get("step_median_s") for r in sub}
        y0 = header + i * PANEL_H
        _panel(draw, 0, y0, f"{arch}: peak training memory (MiB)", batches, mem, variants)
        _panel(draw, PANEL_W, y0, f"{arch}: time per training step (s)", batches, sec, variants)
    img.save(path)
    return path
