"""The CPU speed options of ``common.training.cpu`` as every bundle config wires them: ``cpu_threads``,
``channels_last``, ``bf16`` and a ``network`` built by ``common.training.cpu.optimize_for_cpu``.

Outputs and hooks only; no wall-clock assertions (docs/benchmarks.md has the timings).
"""

from __future__ import annotations

import json
import os

import pytest
import torch
from bundle_helpers import all_bundles, bundle_dir
from monai.bundle import ConfigParser

from common.benchmarks.cpu_options import ab
from common.training import cpu as perf

BUNDLES = all_bundles()
CONFIGS = [["train.json"], ["train.json", "evaluate.json"], ["inference.json"]]
# listed under "skipped tests" at the end of the run (tests/conftest.py) where the CPU lacks the kernels
NO_BF16 = "no oneDNN bf16 kernels on this CPU (common.training.cpu.bf16_support()['mkldnn_bf16'] is False)"


def _parser(bundle: str, configs: list[str], **override) -> ConfigParser:
    d = bundle_dir(bundle) / "configs"
    parser = ConfigParser()
    parser.read_config([str(d / c) for c in configs])
    parser["bundle_root"] = str(bundle_dir(bundle))
    parser["cpu_threads"] = None  # leave this test process's thread count alone unless a test sets it
    for key, value in override.items():
        parser[key] = value
    return parser


def _example(bundle: str) -> torch.Tensor:
    """The smallest input the metadata allows (``32*n`` -> 32), seeded."""
    meta = json.loads((bundle_dir(bundle) / "configs" / "metadata.json").read_text())
    image = meta["network_data_format"]["inputs"]["image"]
    shape = [int(s.split("*")[0]) if isinstance(s, str) else s for s in image["spatial_shape"]]
    return torch.randn(1, image["num_channels"], *shape, generator=torch.Generator().manual_seed(0))


def _hooks(net: torch.nn.Module) -> int:
    return len(net._forward_pre_hooks) + len(net._forward_hooks)


@pytest.mark.parametrize("configs", CONFIGS, ids=lambda c: "+".join(c))
@pytest.mark.parametrize("bundle", BUNDLES)
def test_configs_expose_the_options_with_the_measured_defaults(bundle, configs):
    parser = ConfigParser()
    parser.read_config([str(bundle_dir(bundle) / "configs" / c) for c in configs])
    assert parser["cpu_threads"] == "auto"
    assert parser["channels_last"] is True
    assert parser["bf16"] == "auto"
    assert "$import common.training.cpu" in parser["imports"]
    assert "common.training.cpu.optimize_for_cpu(@network_def" in parser["network"]


@pytest.mark.parametrize("configs", CONFIGS, ids=lambda c: "+".join(c))
@pytest.mark.parametrize("bundle", BUNDLES)
def test_options_off_give_the_plain_network(bundle, configs):
    parser = _parser(bundle, configs, channels_last=False, bf16=False)
    net = parser.get_parsed_content("network")
    assert net is parser.get_parsed_content("network_def")  # the same module, nothing wrapped
    assert _hooks(net) == 0


@pytest.mark.parametrize("bundle", BUNDLES)
def test_channels_last_converts_inputs_and_keeps_outputs(bundle):
    plain = _parser(bundle, ["inference.json"], channels_last=False, bf16=False).get_parsed_content("network")
    fast = _parser(bundle, ["inference.json"], channels_last=True, bf16=False).get_parsed_content("network")
    assert len(fast._forward_pre_hooks) == 1 and not fast._forward_hooks
    fast.load_state_dict(plain.state_dict())  # checkpoints load into either
    weights = [p for p in fast.parameters() if p.dim() in (4, 5)]
    assert weights and all(
        p.is_contiguous(memory_format=torch.channels_last if p.dim() == 4 else torch.channels_last_3d) for p in weights
    )
    x = _example(bundle)
    plain.eval()
    fast.eval()
    with torch.no_grad():
        ref, out = plain(x), fast(x)
    torch.testing.assert_close(out, ref, rtol=1e-4, atol=1e-5)
    assert list(fast.state_dict()) == list(plain.state_dict())


@pytest.mark.skipif(not perf.bf16_support()["mkldnn_bf16"], reason=NO_BF16)
@pytest.mark.parametrize("bundle", BUNDLES)
def test_bf16_autocast_keeps_outputs_close_and_fp32(bundle):
    plain = _parser(bundle, ["inference.json"], channels_last=False, bf16=False).get_parsed_content("network")
    low = _parser(bundle, ["inference.json"], channels_last=False, bf16=True).get_parsed_content("network")
    assert len(low._forward_pre_hooks) == 1 and len(low._forward_hooks) == 1
    low.load_state_dict(plain.state_dict())
    x = _example(bundle)
    plain.eval()
    low.eval()
    with torch.no_grad():
        ref, out = plain(x), low(x)
    for o, r in zip(out if isinstance(out, (list, tuple)) else [out], ref if isinstance(ref, (list, tuple)) else [ref]):
        assert o.dtype == torch.float32
        assert float((o - r).abs().max() / r.abs().max()) < 5e-2
    assert not torch.is_autocast_enabled("cpu")


@pytest.mark.parametrize("native", [True, False])
def test_bf16_auto_follows_native_support(monkeypatch, native):
    support = {"mkldnn": True, "mkldnn_bf16": True, "native": native}
    monkeypatch.setattr(perf, "bf16_support", lambda: support)
    net = _parser(BUNDLES[0], ["inference.json"], channels_last=False, bf16="auto").get_parsed_content("network")
    assert _hooks(net) == (2 if native else 0)  # the autocast pre-hook and hook, or none
    forced = _parser(BUNDLES[0], ["inference.json"], channels_last=False, bf16=True).get_parsed_content("network")
    assert _hooks(forced) == 2  # an explicit True does not ask the hardware


@pytest.mark.parametrize(
    "cores,load,threads",
    [(4, 0.0, 4), (4, 1.4, 3), (4, 1.6, 2), (2, 7.0, 1), (8, 2.5, 6), (2, None, 2)],
)
def test_auto_threads_leave_out_the_busy_cores(monkeypatch, cores, load, threads):
    """``cores - 1-minute load``, rounded, at least 1; every core where there is no load average."""

    def loadavg():
        if load is None:
            raise OSError("no load average")
        return (load, 0.0, 0.0)

    monkeypatch.setattr(os, "getloadavg", loadavg)
    monkeypatch.setattr(perf, "physical_cores", lambda: cores)
    assert perf.auto_threads() == threads
    assert perf.auto_threads(cores=cores) == threads


def test_cpu_threads_sets_the_intra_op_threads(monkeypatch):
    before = torch.get_num_threads()
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setattr(os, "getloadavg", lambda: (1.4, 0.0, 0.0))
    monkeypatch.setattr(perf, "physical_cores", lambda: 4)
    try:
        _parser(BUNDLES[0], ["inference.json"], cpu_threads=1).get_parsed_content("network")
        assert torch.get_num_threads() == 1
        _parser(BUNDLES[0], ["inference.json"], cpu_threads="auto").get_parsed_content("network")
        assert torch.get_num_threads() == 3  # 4 cores, 1.4 of them busy
    finally:
        torch.set_num_threads(before)


def test_auto_threads_respect_an_explicit_omp_num_threads(monkeypatch):
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        monkeypatch.setenv("OMP_NUM_THREADS", "1")
        monkeypatch.setattr(perf, "auto_threads", lambda cores=None: 2)
        assert perf.set_threads("auto")["num_threads"] == 1  # the user's choice stays
        monkeypatch.delenv("OMP_NUM_THREADS")
        assert perf.set_threads("auto")["num_threads"] == 2
    finally:
        torch.set_num_threads(before)


def test_network_def_stays_hook_free_for_export():
    """``ckpt_export`` builds ``network_def`` alone: the options (hooks) never reach the TorchScript."""
    parser = _parser(BUNDLES[0], ["inference.json"], channels_last=True, bf16=True)
    net = parser.get_parsed_content("network_def")
    assert _hooks(net) == 0
    torch.jit.script(net)


def test_perf_bundles_ab_on_a_2d_bundle():
    before = torch.get_num_threads()
    r = ab("prostate_mri_segmentation", (2, 1, 32, 32), "channels_last", pairs=1)
    assert r["max_rel_diff"] < 1e-4
    for mode in ("train", "infer"):  # one pair: the speed-up is baseline time over option time
        t = r[mode]
        assert t["speedup"] == pytest.approx(t["baseline_s"] / t["option_s"], rel=1e-12), (mode, t)
    assert torch.get_num_threads() == before


def test_gflops_are_the_operation_count_over_the_median_time(monkeypatch):
    calls = []

    def half_a_second(fn, repeats=5, warmup=1):
        calls.append(fn())
        return 0.5

    monkeypatch.setattr(perf, "_median_time", half_a_second)
    assert perf.gemm_gflops(n=8) == pytest.approx(2 * 8**3 / 0.5 / 1e9)
    assert tuple(calls[-1].shape) == (8, 8)  # the timed call is the matrix product
    macs = 6**3 * 27 * 2 * 2  # output voxels x kernel x in x out channels
    for layout in ("contiguous", "channels_last"):
        assert perf.conv_gflops(channels=2, size=6, layout=layout) == pytest.approx(2 * macs / 0.5 / 1e9)
    with pytest.raises(ValueError, match="layout"):
        perf.conv_gflops(channels=2, size=6, layout="nchw")
