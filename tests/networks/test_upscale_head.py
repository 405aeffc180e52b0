"""Low-resolution input, high-resolution output: ELU-Net, up-scaling head, multi-scale loss, complexity tables."""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from monai.losses import DiceCELoss

from common.benchmarks.complexity import complexity, count_macs, gmac_table
from common.inference.lowres_slices import head_stages
from common.losses.multiscale import MultiScaleLoss
from common.networks import UpscaleHead, count_parameters, get_network

SIDES = (320, 160, 80, 32, 16)


pytestmark = pytest.mark.usefixtures("one_torch_thread")  # tests/conftest.py


n_params = count_parameters


def elunet(out_channels: int = 2, features: int = 16, **kwargs) -> nn.Module:
    """2D ELU-Net of 1 input channel with 4 poolings, through the factory."""
    return get_network("elunet", 2, 1, out_channels, init_filters=features, depth=4, **kwargs)


def tiny_backbone(num_classes: int, spatial_dims: int = 2) -> nn.Module:
    conv = nn.Conv2d if spatial_dims == 2 else nn.Conv3d
    return nn.Sequential(conv(1, 4, 3, padding=1), nn.ReLU(), conv(4, num_classes, 1))


# ---------------------------------------------------------------- up-scaling head


@pytest.mark.parametrize("num_classes", [1, 2, 3])
@pytest.mark.parametrize("stages", [1, 4])
def test_head_parameters_per_stage(num_classes: int, stages: int) -> None:
    head = UpscaleHead(nn.Identity(), num_classes, stages)
    assert n_params(head) == stages * (13 * num_classes**2 + 2 * num_classes)


def test_head_parameters_paper_example() -> None:
    assert n_params(UpscaleHead(nn.Identity(), 1, 4)) == 60
    # skip variant: 2 plain stages (15 each) + stage 2 (stretch x4: 2*5 + 10, fused stage 18 + 19)
    # + stage 3 (stretch x8: 3*5 + 10, fused stage 37)
    assert n_params(UpscaleHead(nn.Identity(), 1, 4, stage_skips=True)) == 30 + 57 + 62 == 149
    # per skip stage i: i (4 Nc^2 + Nc) + 43 Nc^2 + 4 Nc
    nc = 2
    expected = 2 * (13 * nc**2 + 2 * nc) + sum(i * (4 * nc**2 + nc) + 43 * nc**2 + 4 * nc for i in (2, 3))
    assert n_params(UpscaleHead(nn.Identity(), nc, 4, stage_skips=True)) == expected == 562


@pytest.mark.parametrize("stage_skips", [False, True])
def test_head_output_scales_and_modes(stage_skips: bool) -> None:
    head = UpscaleHead(tiny_backbone(2), 2, 4, stage_skips=stage_skips)
    x = torch.randn(2, 1, 16, 16)
    outs = head(x)  # training mode: every scale, lowest resolution first
    assert isinstance(outs, list)
    assert [tuple(o.shape) for o in outs] == [(2, 2, s, s) for s in (16, 32, 64, 128, 256)]
    assert torch.equal(outs[0], head.backbone(x))

    head.eval()
    top = head(x)  # eval mode: only the highest resolution, for inferers
    assert isinstance(top, torch.Tensor) and top.shape == (2, 2, 256, 256)
    assert torch.equal(top, head.forward_all_scales(x)[-1])
    head.return_all_scales = True
    assert len(head(x)) == 5


def test_head_wraps_other_backbones() -> None:
    head = UpscaleHead(tiny_backbone(3), 3, 2)
    assert [o.shape[1:] for o in head(torch.randn(1, 1, 8, 8))] == [(3, 8, 8), (3, 16, 16), (3, 32, 32)]
    head3d = UpscaleHead(tiny_backbone(2, spatial_dims=3), 2, 1, spatial_dims=3).eval()
    assert head3d(torch.randn(1, 1, 4, 4, 4)).shape == (1, 2, 8, 8, 8)
    assert n_params(UpscaleHead(nn.Identity(), 1, 0)) == 0


def test_torchscript() -> None:
    torch.manual_seed(0)
    x = torch.randn(2, 1, 16, 16)
    head = elunet(features=4, head_stages=4, stage_skips=True).eval()
    assert isinstance(head, UpscaleHead)
    scripted = torch.jit.script(head)  # scripts the ELU-Net backbone as well
    assert isinstance(scripted.backbone, torch.jit.ScriptModule)
    assert torch.allclose(scripted.backbone(x), head.backbone(x))
    assert torch.allclose(scripted(x), head(x))
    assert len(scripted.forward_all_scales(x)) == 5
    scripted.train()
    assert [o.shape[-1] for o in scripted(x)] == [16, 32, 64, 128, 256]


# ---------------------------------------------------------------- ELU-Net and GMac


def test_elunet_parameters_and_shape() -> None:
    with torch.device("meta"):
        assert n_params(elunet(1)) == 3_377_201
        assert n_params(elunet()) == 3_377_218  # 2 classes
        assert n_params(elunet(1, 8)) == 845_977
        assert n_params(elunet(pocket=True)) == 110_290
    assert elunet(features=4).eval()(torch.randn(1, 1, 32, 32)).shape == (1, 2, 32, 32)
    with pytest.raises(ValueError, match=r"\[24, 32\].*multiple of \[16, 16\]"):
        elunet(features=4)(torch.randn(1, 1, 24, 32))


def test_head_through_the_factory() -> None:
    with torch.device("meta"):
        head = elunet(1, head_stages=4)
        skips = elunet(1, head_stages=4, stage_skips=True)
        assert isinstance(head, UpscaleHead) and head.stages == 4
        assert n_params(head) == 3_377_201 + 60 and n_params(skips) == 3_377_201 + 149
        assert isinstance(elunet(1, head_stages=0), UpscaleHead)  # a head without stages still returns a list
        assert not isinstance(elunet(1), UpscaleHead)
        # any segmenter takes the head: 13 Nc^2 + 2 Nc parameters per stage
        unet = get_network("unet", 2, 1, 2, init_filters=4, depth=2)
        assert n_params(get_network("unet", 2, 1, 2, init_filters=4, depth=2, head_stages=2)) == n_params(unet) + 112
    with pytest.raises(ValueError, match="needs the up-scaling head"):
        elunet(stage_skips=True)
    with pytest.raises(ValueError, match="needs a segmenter"):
        get_network("classifier", 2, 1, 2, 16, 4, head_stages=1)


def test_gmacs_match_paper() -> None:
    paper_elunet = {320: 29.98, 160: 7.5, 80: 1.87, 32: 0.30, 16: 0.07}
    paper_head = {160: 7.5, 80: 1.88, 32: 0.30, 16: 0.08}
    macs: dict[str, dict[int, int]] = {"ptflops": {}, "forward": {}}
    for side in SIDES:
        with torch.device("meta"):
            net = elunet(1)
            head = elunet(1, head_stages=head_stages(320, side))
        for rule in macs:
            macs[rule][side] = count_macs(net, (1, side, side), rule)
        assert round(macs["ptflops"][side] / 1e9, 2) == paper_elunet[side]
        assert head_stages(320, side) == {320: 0, 160: 1, 80: 2, 32: 3, 16: 4}[side]
        if side in paper_head:
            assert round(count_macs(head, (1, side, side), "ptflops") / 1e9, 2) == paper_head[side]
    # exact totals at 320x320; every other side scales exactly with the pixel count
    assert macs["forward"][320] == 17_920_819_200
    assert macs["ptflops"][320] == 29_982_208_000
    for per_side in macs.values():
        for side in SIDES:
            assert per_side[side] * (320 // side) ** 2 == per_side[320]
    assert [round(macs["forward"][s] / 1e9, 2) for s in SIDES] == [17.92, 4.48, 1.12, 0.18, 0.04]


def test_gmacs_table() -> None:
    text = gmac_table(sizes=16, stage_skips=True)
    assert "| U-Net f=64 (ConvT, BN; paper's baseline) | 16 | 16 | 0 | 31,036,481 | 0.213 | 0.188 | 0.18 |" in text
    assert "| U-Net f=16 (PocketNet, short style) | 16 | 16 | 0 | 1,940,817 | 0.013 | 0.012 | - |" in text
    assert "| ELU-Net n=16 | 16 | 16 | 0 | 3,377,201 | 0.075 | 0.045 | 0.07 |" in text
    assert "| ELU-Net n=16 + head | 16 | 256 | 4 | 3,377,261 | 0.076 | 0.046 | 0.08 |" in text
    assert "| ELU-Net n=16 + head (stage skips) | 16 | 256 | 4 | 3,377,350 | 0.078 | 0.047 | - |" in text
    assert len([line for line in text.splitlines() if line.startswith("| ") and "| 16 |" in line]) == 5


def test_plain_unet_baseline_is_the_pocketnet_unet_without_conv_bias() -> None:
    """The table's U-Net f=64 (Ronneberger et al.; milesial/Pytorch-UNet layout): 31.04 M parameters, exact MACs."""
    with torch.device("meta"):
        plain = get_network("unet", 2, 1, 1, init_filters=64, depth=4, bias=False)
        with_bias = get_network("unet", 2, 1, 1, init_filters=64, depth=4)
    assert n_params(plain) == 31_036_481
    assert n_params(with_bias) - n_params(plain) == 2 * 2 * (64 + 128 + 256 + 512) + 2 * 1024  # 18 conv biases
    assert count_macs(plain, (1, 320, 320), "forward") == 75_143_577_600
    assert count_macs(plain, (1, 320, 320), "ptflops") == 85_384_499_200


def test_complexity_prints_parameter_and_gmac_tables() -> None:
    params = complexity("params")
    assert params.splitlines()[:2] == ["| network | ours | paper |", "|---|---:|---:|"]
    assert "| Table I  densenet full | 135,896,162 | 135.9M |" in params
    assert "| Table II classifier pocket | 21,074 | 0.02M |" in params
    assert "| Table IV unet doubling up to level 1 | 2,640,834 | 2.60M |" in params
    assert "| short paper 3D NFBS densenet pocket | 241,282 | 0.241M |" in params
    assert len(params.splitlines()) == 2 + 24
    assert complexity("gmacs", sizes=16) == gmac_table(sizes=16)
    assert complexity("all", sizes=16) == params + "\n\n" + gmac_table(sizes=16)
    with pytest.raises(ValueError, match="table must be one of"):
        complexity("flops")


# ---------------------------------------------------------------- multi-scale loss


def test_multiscale_loss_hand_computed() -> None:
    torch.manual_seed(0)
    target = torch.randint(0, 3, (2, 1, 8, 8))
    outs = [torch.randn(2, 3, 4, 4), torch.randn(2, 3, 8, 8)]
    base = DiceCELoss(to_onehot_y=True, softmax=True)
    # full-resolution ground truth downsampled to the 4x4 output: nearest-exact keeps pixel 2i+1 of each block
    low = base(outs[0], target[..., 1::2, 1::2].float())
    high = base(outs[1], target.float())
    loss = MultiScaleLoss()
    assert torch.allclose(loss(outs, target), low + high)
    assert torch.allclose(loss(outs[::-1], target.float()), low + high)  # order and label dtype do not matter
    assert torch.allclose(loss(outs[1], target), high)  # a single tensor goes straight to the base loss
    assert torch.allclose(MultiScaleLoss(weights=[0.5, 2.0])(outs, target), 0.5 * low + 2.0 * high)


def test_multiscale_loss_refuses_upsampled_target() -> None:
    with pytest.raises(ValueError, match="smaller than output"):
        MultiScaleLoss()([torch.randn(1, 2, 8, 8), torch.randn(1, 2, 16, 16)], torch.zeros(1, 1, 8, 8))
    with pytest.raises(ValueError, match="weights"):
        MultiScaleLoss(weights=[1.0])([torch.randn(1, 2, 8, 8)] * 2, torch.zeros(1, 1, 8, 8))


# ---------------------------------------------------------------- learning


def _disks(n: int, size: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Bright disks on noise: a 4x average-pooled image as input, the full-size disk mask as ground truth."""
    yy, xx = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    centre = torch.rand(n, 2, generator=generator) * size * 0.5 + size * 0.25
    radius = torch.rand(n, generator=generator) * size * 0.15 + size * 0.15
    dist2 = (yy[None] - centre[:, 0, None, None]) ** 2 + (xx[None] - centre[:, 1, None, None]) ** 2
    label = (dist2 <= radius[:, None, None] ** 2).float()[:, None]
    image = label + 0.3 * torch.randn(label.shape, generator=generator)
    return F.avg_pool2d(image, 4), label


@pytest.mark.slow
def test_learns_high_resolution_from_low_resolution_input() -> None:
    torch.manual_seed(0)
    generator = torch.Generator().manual_seed(0)
    net = elunet(2, features=8, head_stages=2)  # 16x16 in, 64x64 out
    loss_fn = MultiScaleLoss()
    optimizer = torch.optim.Adam(net.parameters(), lr=1e-2)
    losses = []
    for _ in range(40):
        x, y = _disks(16, 64, generator)
        loss = loss_fn(net(x), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert sum(losses[-5:]) / 5 < 0.3 * sum(losses[:5]) / 5

    x, y = _disks(16, 64, generator)
    net.eval()
    with torch.no_grad():
        pred = net(x).argmax(1, keepdim=True).float()
    assert pred.shape == y.shape == (16, 1, 64, 64)
    dice = 2 * (pred * y).sum() / (pred.sum() + y.sum())
    assert dice > 0.7
