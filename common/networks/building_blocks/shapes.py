"""Input-size checks, so a wrong patch size fails with a sentence instead of a shape error deep inside."""

from __future__ import annotations


def check_divisible(spatial: list[int], multiple: list[int]) -> None:
    """Raise if a spatial size cannot be halved (down-sampled) as often as the network does."""
    for size, m in zip(spatial, multiple):
        if size % m != 0:
            raise ValueError(
                "Input spatial size "
                + str(list(spatial))
                + " cannot be down-sampled by this network: every dimension must be a multiple of "
                + str(list(multiple))
                + " (pad or crop the input, or lower depth)."
            )


