"""Tests of ``pocket profile`` and the CPU speed options of ``common.training.cpu``.

No wall-clock assertions: timings on a shared CI machine say nothing; only shapes, counts and outputs.
"""

from __future__ import annotations

import copy
import csv
import os

import pytest
import torch
from PIL import Image
from torch import nn

from common.benchmarks.complexity import count_macs
from common.benchmarks.profile import CSV_COLUMNS, NFBS_VOLUME, _render_speed, _scaled_volume, profile
from common.benchmarks.profile_measure import measure_speed, network_stats
from common.networks import get_network
from common.training import cpu as perf


def _tiny_net() -> nn.Module:
    return nn.Sequential(nn.Conv3d(1, 4, 3, padding=1), nn.ReLU(), nn.Conv3d(4, 2, 1))


@pytest.mark.parametrize("device", ["cpu", "meta"])
def test_macs_of_a_tiny_conv_net_match_the_hand_count(device: str) -> None:
    with torch.device(device):
        net = _tiny_net()
    conv1 = 8**3 * 27 * 1 * 4  # output positions x kernel x in x out
    conv2 = 8**3 * 1 * 4 * 2
    assert count_macs(net, (1, 8, 8, 8), "forward") == conv1 + conv2 == 59_392
    # backward: weight gradients of both convs, input gradient of the second only (the image needs none)
    assert count_macs(net, (1, 8, 8, 8), "forward_backward") == 2 * conv1 + 3 * conv2
    # ptflops <= 0.7.4 adds one per output element for each bias and ReLU: 4 + 4 + 2 channels of 8^3
    assert count_macs(net, (1, 8, 8, 8), "ptflops") == conv1 + conv2 + 10 * 8**3
    assert net.training  # the mode is restored


def test_transposed_conv_is_counted_over_its_input_positions() -> None:
    with torch.device("meta"):
        up = nn.ConvTranspose3d(4, 2, kernel_size=2, stride=2)
    assert count_macs(up, (4, 4, 4, 4), "forward") == 4**3 * 8 * 4 * 2
    # ptflops <= 0.7.4 counts it over its 8^3 output positions (8x here), plus the bias
    assert count_macs(up, (4, 4, 4, 4), "ptflops") == 8**3 * 8 * 4 * 2 + 2 * 8**3
    with pytest.raises(ValueError, match="rule must be one of"):
        count_macs(up, (4, 4, 4, 4), "true")


def test_network_stats_pocket_has_fewer_parameters_and_macs() -> None:
    full = network_stats("unet", False, (32, 32, 32))
    pocket = network_stats("unet", True, (32, 32, 32))
    assert pocket["params"] < full["params"]
    assert 0 < pocket["macs_forward"] < full["macs_forward"] < full["macs_train"]


def test_scaled_volume_keeps_the_nfbs_window_count() -> None:
    assert _scaled_volume((128, 128, 128)) == NFBS_VOLUME
    assert _scaled_volume((32, 32, 32)) == (64, 64, 48)


def test_quick_profile_writes_markdown_csv_and_png(tmp_path, capsys) -> None:
    out = tmp_path / "prof"
    profile(quick=True, archs="unet", patch=16, batches=1, sizes=16, volume=16, warmup=0, repeats=1,
            sections="size,train,infer", threads=1, gemm_size=256, out=str(out))
    text = capsys.readouterr().out
    for name in ("profile.md", "profile.csv", "profile.json", "profile.png"):
        assert (out / name).is_file(), name
    assert (out / "profile.md").read_text(encoding="utf-8").strip() == text.strip()
    for heading in ("### Size and compute", "### Training step", "### Inference throughput",
                    "### Sliding-window inference"):
        assert heading in text
    for column in ("full: step peak MiB", "pocket: s/step median / mean", "memory pocket vs full",
                   "time pocket vs full", "speed-up pocket vs full", "paper Table III (RTX 8000)"):
        assert column in text
    with open(out / "profile.csv", newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    assert tuple(rows[0].keys()) == CSV_COLUMNS
    sections = [(r["section"], r["variant"]) for r in rows]
    for section in ("size", "train", "sliding_window", "throughput"):
        assert sorted(v for s, v in sections if s == section) == ["full", "pocket"], section
    params = {r["variant"]: int(r["params"]) for r in rows if r["section"] == "size"}
    for r in (r for r in rows if r["section"] == "train"):
        assert r["status"] == "ok", r
        peak, base, step = float(r["process_peak_mib"]), float(r["baseline_mib"]), float(r["step_peak_mib"])
        assert step == pytest.approx(peak - base, abs=1e-6), r  # what the step adds to the built network
        # the step allocates at least the gradients and Adam's two moments: 3 fp32 values per parameter
        assert step >= 3 * 4 * params[r["variant"]] / 2**20, r
    for r in (r for r in rows if r["section"] == "throughput"):
        assert float(r["images_per_s"]) == pytest.approx(1 / float(r["step_median_s"]), rel=1e-9), r  # batch 1
    with Image.open(out / "profile.png") as img:
        assert img.format == "PNG" and img.width > 0 and img.height > 0


def test_speed_section_measures_and_renders() -> None:
    res = measure_speed("unet", patch=(16, 16, 16), batch=2, pairs=1, sw_volume=(16, 16, 16), sw_batch_sizes=(1, 2),
                        conv_size=16, cores=2, gemm_size=256)
    options = [r["option"] for r in res["ab"]]
    assert options[0] == "channels_last" and any(o.startswith("1 thread") for o in options)
    for option in set(options):  # every option is timed for a training step and for inference
        assert sorted(r["mode"] for r in res["ab"] if r["option"] == option) == ["infer", "train"], option
    for r in res["ab"]:  # one pair: the speed-up is baseline time over option time
        assert r["speedup"] == pytest.approx(r["baseline_s"] / r["option_s"], rel=1e-12), r
        if r["option"] != "bf16 autocast":
            assert r["max_rel_diff"] < 1e-4, r
    text = "\n".join(_render_speed({"status": "ok", **res}, {"gemm_peak_gflops": None}))
    assert "% of GEMM peak" in text and "speed-up (median of pairs)" in text and "sw_batch_size" in text
    assert "| channels_last | infer |" in text


def _small_unet() -> nn.Module:
    torch.manual_seed(0)
    return get_network("unet", 3, 1, 2, init_filters=4, depth=2, pocket=True).eval()


def test_channels_last_preserves_outputs_and_state_dict() -> None:
    net = _small_unet()
    x = torch.randn(2, 1, 16, 16, 16)
    with torch.no_grad():
        ref = net(x)
    fast = perf.use_channels_last(copy.deepcopy(net))
    assert all(p.is_contiguous(memory_format=torch.channels_last_3d) for p in fast.parameters() if p.dim() == 5)
    with torch.no_grad():
        out = fast(x)
    assert out.shape == ref.shape
    torch.testing.assert_close(out, ref, rtol=1e-4, atol=1e-5)
    assert list(fast.state_dict()) == list(net.state_dict())
    fast.load_state_dict(net.state_dict())  # checkpoints stay interchangeable
    fast.train()
    fast(x).sum().backward()  # trains
    assert all(p.grad is not None for p in fast.parameters())


@pytest.mark.skipif(not perf.bf16_support()["mkldnn_bf16"],
                    reason="no oneDNN bf16 kernels on this CPU (bf16_support()['mkldnn_bf16'] is False)")
def test_bf16_autocast_stays_close_and_cleans_up() -> None:
    net = _small_unet()
    x = torch.randn(1, 1, 16, 16, 16)
    with torch.no_grad():
        ref = net(x)
    low = perf.autocast_forward(copy.deepcopy(net))
    with torch.no_grad():
        out = low(x)
    assert out.dtype == torch.float32
    assert float((out - ref).abs().max() / ref.abs().max()) < 5e-2
    assert list(low.state_dict()) == list(net.state_dict())
    assert not torch.is_autocast_enabled("cpu")
    with pytest.raises(ValueError):
        low(torch.zeros(1, 1, 15, 15, 15))  # not divisible: the forward raises inside autocast
    assert not torch.is_autocast_enabled("cpu")  # the hook left autocast anyway


def test_optimize_for_cpu_and_threads(monkeypatch: pytest.MonkeyPatch) -> None:
    net = _small_unet()
    assert perf.optimize_for_cpu(net, channels_last=False, bf16=False) is net
    assert not net._forward_pre_hooks and not net._forward_hooks
    before = torch.get_num_threads()
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setattr(os, "getloadavg", lambda: (0.9, 0.0, 0.0))
    monkeypatch.setattr(perf, "physical_cores", lambda: 3)
    try:
        assert perf.set_threads("auto")["num_threads"] == 2  # 3 cores, about one busy
    finally:
        torch.set_num_threads(before)


@pytest.mark.parametrize("flags,native", [({"avx512_bf16"}, True), ({"amx_bf16", "avx2"}, True),
                                          ({"avx512f", "avx2"}, False), (set(), False)])
def test_bf16_is_native_only_with_the_hardware_flags(monkeypatch: pytest.MonkeyPatch, flags, native) -> None:
    monkeypatch.setattr(perf, "cpu_flags", lambda: flags)
    support = perf.bf16_support()
    assert set(support) == {"mkldnn", "mkldnn_bf16", "native"}
    assert support["native"] is (native and support["mkldnn_bf16"])  # emulated bf16 is never "native"
