"""Slab-wise U-Net and the two-stage slab-wise cascade: exact reassembly, slab sampling, guidance channels,
end-to-end cascade inference, a short learning run and the memory benchmark command."""

from __future__ import annotations

import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from monai.data import MetaTensor
from monai.inferers import SlidingWindowSplitter
from monai.losses import DiceCELoss
from monai.networks.utils import one_hot
from monai.transforms import ConcatItemsd, NormalizeIntensityd, Zoomd
from torch import nn

from common import REPO_ROOT
from common.benchmarks import memory as memory_benchmark
from common.inference.cascade import (
    CascadeInferer,
    CascadeNet,
    DownsampleLabeld,
    DownUpSampleLabeld,
    Stage1Predictiond,
    downsample,
    label_guidance,
    load_weights,
    lowres_size,
    upsample_guidance,
)
from common.inference.slabs import RandSlabd, SlabInferer, SlabSplitter, network_multiple, slab_patch_size
from common.networks import count_parameters, get_network

ROOT = REPO_ROOT


pytestmark = pytest.mark.usefixtures("one_torch_thread")  # tests/conftest.py


def tiny_unet(in_channels: int, out_channels: int, depth: int = 2) -> nn.Module:
    return get_network("unet", 3, in_channels, out_channels, init_filters=4, depth=depth, pocket=True)


def blob(shape: tuple[int, int, int], centre: tuple[float, float, float], radius: float) -> torch.Tensor:
    """``(1, *shape)`` 0/1 ball."""
    grid = torch.meshgrid(*[torch.arange(s, dtype=torch.float32) for s in shape], indexing="ij")
    dist2 = sum((g - c) ** 2 for g, c in zip(grid, centre))
    return (dist2 <= radius**2).float()[None]


def dice(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.bool(), b.bool()
    return 2 * (a & b).sum().item() / max(a.sum().item() + b.sum().item(), 1)


# ---------------------------------------------------------------- the slab-wise cascade study's U-Net


def test_slab_study_unet_is_get_network_depth4() -> None:
    with torch.device("meta"):
        full = get_network("unet", 3, 4, 4, init_filters=32, depth=4)
        pocket = get_network("unet", 3, 4, 4, init_filters=32, depth=4, pocket=True)
    assert count_parameters(full) == 22_583_908  # the study's UNet3d (4 modalities, 4 classes)
    assert count_parameters(pocket) == 618_820
    assert [m.out_channels for m in full.ups] == [256, 128, 64, 32]  # ConvTranspose3d(c, c/2, 2, 2)
    assert network_multiple(full, 3) == (16, 16, 16)


# ---------------------------------------------------------------- slab inference


class Recorder(nn.Module):
    """Identity "network" that remembers every input it saw."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: list[torch.Tensor] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.seen.append(x.clone())
        return x


@pytest.mark.parametrize("axis", [0, 1, -1])
@pytest.mark.parametrize("length", [37, 32])  # padded last slab / exact multiple of 16
@pytest.mark.parametrize("multiple", [1, 8])
def test_slab_inferer_reassembles_exactly(axis: int, length: int, multiple: int) -> None:
    shape = [20, 22, 26]
    shape[axis] = length
    x = torch.randn(2, 3, *shape)
    net = Recorder()
    y = SlabInferer(slab_size=16, axis=axis, multiple=multiple)(x, net)
    assert torch.equal(y, x)
    assert len(net.seen) == math.ceil(length / 16)
    ax = axis % 3
    for slab in net.seen:
        assert slab.shape[2 + ax] == 16
        assert all(slab.shape[2 + i] == math.ceil(s / multiple) * multiple for i, s in enumerate(shape) if i != ax)
    tail = length - 16 * (len(net.seen) - 1)  # real planes of the last slab; the rest is zero padding
    assert torch.count_nonzero(net.seen[-1].narrow(2 + ax, tail, 16 - tail)) == 0


def test_slab_splitter_matches_monai_splitter_and_concatenates() -> None:
    x = torch.randn(2, 3, 20, 22, 37)
    size = (24, 24, 16)
    ours = sorted(SlabSplitter(size)(x), key=lambda p: tuple(p[1]))
    ref = sorted(SlidingWindowSplitter(size, overlap=0.0, pad_mode="constant")(x), key=lambda p: tuple(p[1]))
    assert [tuple(loc) for _, loc in ours] == [tuple(loc) for _, loc in ref]
    assert all(torch.equal(a, b) for (a, _), (b, _) in zip(ours, ref))
    guide = torch.randint(0, 2, (2, 2, 20, 22, 37), dtype=torch.uint8)
    y = SlabInferer(16, -1, multiple=8)((x, guide), Recorder())  # concatenated slab by slab
    assert torch.equal(y, torch.cat([x, guide.float()], dim=1))


def test_slab_inferer_pointwise_network_and_whole_volume() -> None:
    x = torch.randn(1, 2, 18, 20, 35)
    conv = nn.Conv3d(2, 3, 1)
    with torch.no_grad():
        torch.testing.assert_close(SlabInferer(16, -1)(x, conv), conv(x), rtol=0, atol=1e-6)
        net = Recorder()
        assert torch.equal(SlabInferer(slab_size=None, multiple=16)(x, net), x)
    assert [tuple(s.shape) for s in net.seen] == [(1, 2, 32, 32, 48)]


def test_slab_inferer_reads_network_multiple_and_keeps_meta() -> None:
    net = tiny_unet(2, 2).eval()  # depth 2: multiple 4
    inferer = SlabInferer(slab_size=8, axis=1)
    assert inferer.patch_size((17, 30, 9), net) == (20, 8, 12)
    x = MetaTensor(torch.randn(1, 2, 17, 30, 9), affine=torch.diag(torch.tensor([2.0, 3.0, 4.0, 1.0])))
    with torch.no_grad():
        y = inferer(x, net)
    assert isinstance(y, MetaTensor) and y.shape == (1, 2, 17, 30, 9)
    assert torch.equal(y.affine, x.affine)
    with pytest.raises(ValueError, match="multiple of 4"):
        slab_patch_size((17, 30, 9), 6, -1, 4)


# ---------------------------------------------------------------- slab sampling for training


def _labelled_volume(depth: int = 40) -> dict[str, torch.Tensor]:
    label = torch.zeros(1, 20, 22, depth)
    label[0, 6:12, 5:9, min(30, depth - 4) : min(34, depth)] = 1
    return {"image": torch.randn(2, 20, 22, depth), "label": label}


def test_rand_slab_shapes_padding_and_foreground() -> None:
    sampler = RandSlabd(["image", "label"], "label", slab_size=16, axis=-1, pos=1, neg=0, num_samples=6, multiple=8)
    sampler.set_random_state(0)
    slabs = sampler(_labelled_volume())
    assert len(slabs) == 6
    for s in slabs:
        assert s["image"].shape == (2, 24, 24, 16) and s["label"].shape == (1, 24, 24, 16)
        assert s["label"].sum() > 0  # pos only: every slab holds foreground
    thin = RandSlabd(["image", "label"], "label", slab_size=16, axis=-1, num_samples=2, multiple=1)(
        _labelled_volume(depth=10)
    )
    assert thin[0]["image"].shape == (2, 20, 22, 16)
    assert torch.count_nonzero(thin[0]["image"][..., 10:]) == 0  # padded at the end, with zeros
    side = RandSlabd(["image", "label"], "label", slab_size=16, axis=0, num_samples=1, multiple=1)(
        _labelled_volume()
    )
    assert side[0]["image"].shape == (2, 16, 22, 40)


def test_rand_slab_foreground_ratio() -> None:
    """A share ``pos / (pos + neg)`` of the slabs is centred on foreground; a slab centred on background still
    holds foreground when that centre, moved so the slab fits (planes 8-32 of 40), lies within 8 planes."""
    volume = _labelled_volume()  # foreground on planes 30-33 of 40 along the slab axis
    background = volume["label"][0] == 0
    centre = torch.arange(40).clamp(8, 32)  # MONAI's crop-centre correction for a 16-plane slab
    reaches = (centre + 8 > 30) & (centre - 8 <= 33)  # the slab [c - 8, c + 8) overlaps planes 30-33
    q = float(background[..., reaches].sum() / background.sum())
    assert q == pytest.approx(0.42, abs=0.01)

    def foreground_share(pos: float, neg: float, n: int = 400) -> float:
        sampler = RandSlabd(["image", "label"], "label", slab_size=16, pos=pos, neg=neg, num_samples=n, multiple=1)
        sampler.set_random_state(1)
        return sum(bool(s["label"].sum() > 0) for s in sampler(volume)) / n

    for pos, neg in [(3, 1), (0, 1)]:  # 400 slabs: one standard deviation is at most 0.025
        expected = (pos + neg * q) / (pos + neg)
        assert foreground_share(pos, neg) == pytest.approx(expected, abs=0.06), (pos, neg, expected)


# ---------------------------------------------------------------- cascade: down-sampling and guidance


def test_downsample_matches_monai_zoom_and_normalize() -> None:
    image = torch.randn(2, 30, 28, 37) * 3 + 1
    assert lowres_size((240, 240, 155), 0.3) == (72, 72, 46)
    assert lowres_size((512, 512, 500), (0.2, 0.2, 0.22)) == (102, 102, 110)
    for factor in (0.3, (0.2, 0.25, 0.5)):
        zoom = Zoomd("image", zoom=factor, mode="trilinear", align_corners=True, keep_size=False)
        ref = NormalizeIntensityd("image", channel_wise=True)(zoom({"image": image}))["image"]
        ours = downsample(image[None], factor, renormalize=True)[0]
        assert ours.shape == ref.shape
        torch.testing.assert_close(ours, torch.as_tensor(ref), rtol=1e-5, atol=1e-5)
    label = (torch.rand(1, 30, 28, 37) * 3).floor()
    low = DownsampleLabeld("label", 0.3, num_classes=3)({"label": MetaTensor(label)})["label"]
    assert low.shape == (1, *lowres_size((30, 28, 37), 0.3)) and set(low.unique().tolist()) <= {0, 1, 2}
    soft = DownsampleLabeld("label", 0.3, num_classes=3, soft=True)({"label": label})["label"]
    torch.testing.assert_close(soft.sum(0), torch.ones(soft.shape[1:]))


def test_upsample_guidance_equals_plain_argmax() -> None:
    torch.manual_seed(0)
    low = torch.rand(2, 4, 5, 6, 7)
    size = (11, 13, 17)
    up = F.interpolate(low, size=size, mode="trilinear", align_corners=True)
    ref = one_hot(up.argmax(1, keepdim=True), 4, dim=1)[:, 1:]
    assert torch.equal(upsample_guidance(low, size, hard=True), ref)
    torch.testing.assert_close(upsample_guidance(low, size, hard=False), up[:, 1:])


@pytest.mark.parametrize("hard", [True, False])
def test_stage2_input_channels_from_down_up_sampled_ground_truth(hard: bool) -> None:
    label = blob((30, 28, 37), (14, 13, 18), 10) + blob((30, 28, 37), (14, 13, 18), 5)  # classes 0, 1, 2
    data = {"image": MetaTensor(torch.randn(2, 30, 28, 37)), "label": MetaTensor(label)}
    d = DownUpSampleLabeld("label", factor=0.5, num_classes=3, hard=hard)(data)
    guide = d["guide"]
    assert guide.shape == (2, 30, 28, 37)  # num_classes - 1 channels on the original grid
    assert guide.min() >= 0 and guide.max() <= 1
    if hard:
        assert set(guide.unique().tolist()) == {0.0, 1.0}
        assert guide.sum(0).max() == 1  # one-hot (background = no channel set)
    else:
        assert ((guide > 0) & (guide < 1)).any()  # the slab-wise cascade study's soft guidance
    assert dice(guide[0] > 0.5, label[0] == 1) > 0.7 and dice(guide[1] > 0.5, label[0] == 2) > 0.7
    stage2 = ConcatItemsd(["image", "guide"], name="image")(d)["image"]
    assert stage2.shape == (2 + 2, 30, 28, 37)
    torch.testing.assert_close(torch.as_tensor(label_guidance(label[None], 3, 0.5, hard)[0]), torch.as_tensor(guide))


def _pointwise_stage1() -> nn.Module:
    """Stage-1 stand-in with a known output: class 1 where channel 0 is the larger and above 1, class 2 where
    channel 1 is (logits ``1, x0, x1``)."""
    net = nn.Conv3d(2, 3, 1)
    with torch.no_grad():
        net.weight.copy_(torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0]]).view(3, 2, 1, 1, 1))
        net.bias.copy_(torch.tensor([1.0, 0.0, 0.0]))
    return net


@pytest.mark.parametrize("renormalize", [False, True])
def test_stage1_prediction_guidance(tmp_path: Path, renormalize: bool) -> None:
    trained = _pointwise_stage1()
    torch.save({"model": trained.state_dict()}, tmp_path / "stage1.pt")
    net = load_weights(nn.Conv3d(2, 3, 1).train(), str(tmp_path / "stage1.pt"))
    assert not net.training and torch.equal(net.weight, trained.weight)
    image = 0.3 * torch.randn(2, 32, 32, 40, generator=torch.Generator().manual_seed(0))
    image[0] += 2 * blob((32, 32, 40), (10, 12, 14), 7)[0]
    image[1] += 2 * blob((32, 32, 40), (22, 20, 27), 6)[0]
    d = Stage1Predictiond("image", net, factor=0.5, renormalize=renormalize)({"image": image})
    # the same guidance built by hand from stage 1's output: trilinear down-sampling (z-scored again per
    # channel), stage 1, argmax on its grid, one-hot, each class up-sampled trilinearly, argmax, foreground
    low = F.interpolate(image[None], size=(16, 16, 20), mode="trilinear", align_corners=True)
    if renormalize:
        low = (low - low.mean((2, 3, 4), keepdim=True)) / low.std((2, 3, 4), keepdim=True, unbiased=False)
    with torch.no_grad():
        classes = trained(low).argmax(1, keepdim=True)
    up = F.interpolate(one_hot(classes, 3, dim=1), size=(32, 32, 40), mode="trilinear", align_corners=True)
    want = one_hot(up.argmax(1, keepdim=True), 3, dim=1)[0, 1:]
    assert 0 < want[0].sum() < want[0].numel() and 0 < want[1].sum() < want[1].numel()  # both classes, not all
    assert d["guide"].shape == (2, 32, 32, 40) and d["guide"].dtype == torch.float32
    assert torch.equal(d["guide"], want)
    assert dice(d["guide"][0], image[0] > 1) > 0.8 and dice(d["guide"][1], image[1] > 1) > 0.8


# ---------------------------------------------------------------- cascade inference


class ThresholdStage1(nn.Module):
    """Stage-1 stand-in: class 1 where the first channel is above 0.5."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([0.5 - x[:, :1], x[:, :1] - 0.5], dim=1)


class GuideStage2(nn.Module):
    """Stage-2 stand-in: copies the guidance channel (the last input channel) into class-1 logits."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: list[torch.Tensor] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.seen.append(x)
        g = x[:, -1:]
        return torch.cat([0.5 - g, g - 0.5], dim=1)


def test_cascade_wiring_with_stand_in_stages() -> None:
    target = blob((30, 28, 37), (15, 12, 20), 8)
    image = torch.cat([target, torch.zeros_like(target)])[None]  # 2 channels, the blob in the first
    stage2 = GuideStage2()
    out = CascadeInferer(ThresholdStage1(), factor=0.5, slab_size=16, axis=-1, renormalize=False)(image, stage2)
    assert out.shape == (1, 2, 30, 28, 37)
    assert len(stage2.seen) == 3 and all(s.shape == (1, 3, 30, 28, 16) for s in stage2.seen)
    assert dice(out.argmax(1)[0], target[0]) > 0.9


def test_cascade_end_to_end_tiny_networks() -> None:
    stage1, stage2 = tiny_unet(2, 3), tiny_unet(2 + 2, 3)
    stage1.train()
    image = torch.randn(1, 2, 30, 28, 37)
    with torch.no_grad():
        logits = CascadeInferer(stage1, factor=0.4, slab_size=8, axis=1)(image, stage2.eval())
        assert not stage1.training  # the inferer froze stage 1
        assert logits.shape == (1, 3, 30, 28, 37) and torch.isfinite(logits).all()
        net = CascadeNet(stage1, stage2, factor=0.4, slab_size=8, axis=1).eval()
        torch.testing.assert_close(net(image), logits)


# ---------------------------------------------------------------- learning: stage 2, slab-wise


def test_stage2_slab_training_learns_a_blob() -> None:
    torch.manual_seed(0)
    label = blob((24, 24, 40), (12, 11, 22), 7)
    image = label * 0.8 + 0.6 * torch.randn(1, 24, 24, 40)
    data = DownUpSampleLabeld("label", factor=0.5, num_classes=2)({"image": image, "label": label})
    data = ConcatItemsd(["image", "guide"], name="image")(data)
    sampler = RandSlabd(["image", "label"], "label", slab_size=8, axis=-1, pos=1, neg=1, num_samples=4, multiple=4)
    sampler.set_random_state(0)
    net = tiny_unet(2, 2)
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)
    loss_fn = DiceCELoss(to_onehot_y=True, softmax=True)
    inferer = SlabInferer(slab_size=8, axis=-1)

    def full_dice() -> float:
        net.eval()
        with torch.no_grad():
            pred = inferer(data["image"][None], net).argmax(1)
        net.train()
        return dice(pred[0], label[0])

    before, losses = full_dice(), []
    for _ in range(30):
        slabs = sampler(data)
        x = torch.stack([s["image"] for s in slabs])
        y = torch.stack([s["label"] for s in slabs])
        loss = loss_fn(net(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    after = full_dice()
    assert sum(losses[-5:]) / 5 < 0.7 * sum(losses[:5]) / 5
    assert after > 0.7 and after > before


# ---------------------------------------------------------------- the benchmark command


def test_benchmark_quick_tiny_runs() -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    cmd = [sys.executable, "-m", "common", "memory", "--quick", "--sizes", "1x32x32x20", "--methods",
           "cascade", "--widths", "pocket", "--init-filters", "4", "--device", "cpu", "--threads", "1"]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr
    row = [line for line in proc.stdout.splitlines() if line.startswith("| 1x32x32x20 | cascade | pocket |")]
    assert len(row) == 1
    cells = [c.strip() for c in row[0].strip("|").split("|")]
    # both stages of the cascade (1 image channel, 2 classes; stage 2 also takes the guidance), depth 4
    stages = [get_network("unet", 3, c, 2, init_filters=4, depth=4, pocket=True) for c in (1, 2)]
    assert int(cells[3].replace(",", "")) == sum(count_parameters(n) for n in stages)


def test_benchmark_estimate_and_skip(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture) -> None:
    """Probes are extrapolated linearly in the non-slab area and along the slab axis; too big -> skipped."""

    def fake_child(cfg: dict, timeout: float | None) -> dict:  # overhead + per-slab set + per-voxel buffers
        runs = [{"peak_bytes": 1e6 + 50 * h * w + 3 * h * w * d, "seconds": 1e-6 * h * w * d}
                for _, h, w, d in cfg["shapes"]]
        return {"runs": runs, "params": 1}

    monkeypatch.setattr(memory_benchmark, "_run_child", fake_child)
    cfg = {"shapes": [[1, 128, 128, 100]], "method": "slab", "slab_size": 16, "axis": -1}
    mem, sec = memory_benchmark.estimate(cfg)
    assert mem == pytest.approx(1e6 + 50 * 128 * 128 + 3 * 128 * 128 * 112)  # depth padded to 7 slabs
    assert sec == pytest.approx(1e-6 * 128 * 128 * 112)
    memory_benchmark.memory(sizes="1x128x128x100", methods="whole", widths="pocket", device="cpu", max_gb=1e-6)
    assert "skipped: est." in capsys.readouterr().out
