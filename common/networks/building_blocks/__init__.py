"""Building blocks the architectures in ``common.networks.architectures`` are assembled from."""

from common.networks.building_blocks.conv_blocks import BLOCKS, STYLES, make_block
from common.networks.building_blocks.shapes import check_divisible
from common.networks.building_blocks.up_path import UpPath
from common.networks.building_blocks.widths import level_widths

__all__ = ["BLOCKS", "STYLES", "UpPath", "check_divisible", "level_widths", "make_block"]
