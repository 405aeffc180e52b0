"""Print our parameter counts next to the PocketNet papers' tables: ``python -m common.benchmarks.param_table``."""

from __future__ import annotations

import fire

from common.networks import count_parameters, get_network

# (label, get_network arguments, paper's figure)
ROWS: list[tuple[str, dict, str]] = []
_TMI = {"spatial_dims": 3, "in_channels": 1, "out_channels": 2, "init_filters": 32, "depth": 5}
for _arch, _full, _pocket in [("unet", "90.5M", "0.8M"), ("resnet", "91.9M", "0.8M"),
                              ("densenet", "135.9M", "1.3M"), ("hrnet", "6.5M", "0.7M"),
                              ("nnunet", "31.2M", "0.8M")]:
    ROWS.append((f"Table I  {_arch} full", {"arch": _arch, **_TMI}, _full))
    ROWS.append((f"Table I  {_arch} pocket", {"arch": _arch, "pocket": True, **_TMI}, _pocket))
_CLS = {"arch": "classifier", "spatial_dims": 2, "in_channels": 1, "out_channels": 2, "init_filters": 16,
        "depth": 4, "style": "short"}
ROWS += [("Table II classifier full", _CLS, "1.2M"), ("Table II classifier pocket", {**_CLS, "pocket": True}, "0.02M")]
for _level, _paper in zip(range(5, -1, -1), ["90.5M", "60.0M", "24.3M", "8.40M", "2.60M", "0.80M"]):
    ROWS.append((f"Table IV unet doubling up to level {_level}", {"arch": "unet", "double_until": _level, **_TMI},
                 _paper))
_SHORT = {"spatial_dims": 3, "in_channels": 1, "out_channels": 2, "init_filters": 16, "depth": 4, "style": "short",
          "scale": (1, 2, 2)}
for _arch, _full, _pocket in [("unet", "5.5M", "0.150M"), ("resnet", "5.5M", "0.150M"),
                              ("densenet", "8.1M", "0.241M")]:
    ROWS.append((f"short paper 3D NFBS {_arch} full", {"arch": _arch, **_SHORT}, _full))
    ROWS.append((f"short paper 3D NFBS {_arch} pocket", {"arch": _arch, "pocket": True, **_SHORT}, _pocket))


def table() -> str:
    """Markdown table: network, our exact count, the paper's figure."""
    lines = ["| network | ours | paper |", "|---|---:|---:|"]
    for label, kwargs, paper in ROWS:
        lines.append(f"| {label} | {count_parameters(get_network(**kwargs)):,} | {paper} |")
    return "\n".join(lines)


def main() -> None:
    """Print the table (building the large full networks takes a few seconds each)."""
    print(table())


if __name__ == "__main__":
    fire.Fire(main)
