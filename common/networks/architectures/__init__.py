"""The architectures ``common.networks.get_network`` builds, each assembled from ``common.networks.building_blocks``."""

from common.networks.architectures.classifier import PocketClassifier
from common.networks.architectures.elunet import ELUNet
from common.networks.architectures.hrnet import PocketHRNet
from common.networks.architectures.nnunet import pocket_dynunet
from common.networks.architectures.unet import PocketUNet
from common.networks.architectures.upscale_head import UpscaleHead

__all__ = ["ELUNet", "PocketClassifier", "PocketHRNet", "PocketUNet", "UpscaleHead", "pocket_dynunet"]
