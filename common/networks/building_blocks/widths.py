"""Width schedules: how many feature maps each resolution level gets.

PocketNet's single idea is here (Celaya et al., "PocketNet: A Smaller Neural Network for Medical Image
Analysis", IEEE TMI 2022). A full network doubles the width at every level; a pocket network keeps it
constant; the paper's depth ablation (Table IV) doubles only up to a given level. All three are one rule:
``width_i = init * 2 ** min(i, double_until)``.
"""

from __future__ import annotations


def level_widths(
    init_filters: int,
    depth: int,
    pocket: bool = False,
    double_until: int | None = None,
    max_filters: int | None = None,
) -> list[int]:
    """Widths of levels ``0..depth`` (level ``depth`` is the bottleneck).

    Args:
        init_filters: width of the first (full-resolution) level.
        depth: number of down-sampling steps.
        pocket: keep every level at ``init_filters`` (same as ``double_until=0``).
        double_until: double the width up to this level, then keep it (``None``: up to ``depth``).
        max_filters: cap every width (nnU-Net uses 320).
    """
    if init_filters < 1:
        raise ValueError(f"init_filters must be >= 1, got {init_filters}.")
    if depth < 1:
        raise ValueError(f"depth must be >= 1, got {depth}.")
    if pocket and double_until not in (None, 0):
        raise ValueError(f"pocket=True means double_until=0; got double_until={double_until}.")
    last = 0 if pocket else depth if double_until is None else double_until
    if last < 0:
        raise ValueError(f"double_until must be >= 0, got {double_until}.")
    widths = [init_filters * 2 ** min(i, last) for i in range(depth + 1)]
    if max_filters is not None:
        widths = [min(w, max_filters) for w in widths]
    return widths
