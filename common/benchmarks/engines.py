"""Seconds per volume and peak memory of every inference engine, per bundle, on look-alike data at real size.

``pocket engine_benchmark`` prints one table per bundle and network width. Each row is one configuration (an
engine, and a window rule: ``sliding`` = the bundle's sliding window, ``budget`` = whole volume when the
engine's measured memory fits ``max_memory_gb``), run by the bundle's own ``inference.json`` in a fresh process
over ``--volumes`` look-alike volumes at the real datasets' sizes. Columns:

- start-up: process start to the first volume (imports, config, checkpoint, model compilation), counted once;
- first / marginal: seconds of the first volume and the mean of the later ones, end to end (load, preprocess,
  network, inversion, post-processing, write), i.e. what one more volume in a run costs;
- peak RSS: of the process and its data-loader workers (sampled every 50 ms); a configuration above
  ``--max_rss_gb`` is stopped and reported as ``OOM``;
- x eager: marginal speed-up over torch eager (``channels_last=false``) with the sliding window;
- GOPS and % peak: the network's conv work (2 x MACs of the windows or the padded volume actually computed) per
  marginal second, against the machine's measured fp32 (MKL GEMM) or int8 (OpenVINO INT8 1x1 conv) peak;
- Dice vs torch: overlap of each configuration's label maps with torch eager sliding-window's (classifier:
  share of identical predicted classes).

The networks are trained briefly by the bundle's ``train.json`` on the same look-alike data (``--epochs``, small
patches, no validation) so that their label maps are not trivial, then ``pocket engines`` exports, calibrates
and scores them. Everything is cached in ``--work_dir``; rerunning skips what exists.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from common import BUNDLES_DIR
from common.errors import InvalidInputError

__all__ = ["CONFIGS", "SPECS", "engine_benchmark"]

#: configuration name -> (engine, channels_last, bf16); torch_bf16 is the bundles' torch default on CPUs with
#: native bf16 (AVX512-BF16/AMX: ``bf16: "auto"``), torch_channels_last their default elsewhere
CONFIGS = {
    "torch_eager": ("torch", False, False),
    "torch_channels_last": ("torch", True, False),
    "torch_bf16": ("torch", True, True),
    "onnxruntime": ("onnxruntime", False, False),
    "openvino": ("openvino", False, False),
    "openvino_int8": ("openvino_int8", False, False),
}
WINDOWS = ("sliding", "budget")
REFERENCE = ("torch_eager", "sliding")


@dataclass(frozen=True)
class Spec:
    """How one bundle is benchmarked: its look-alike data at real size and a brief training."""

    bundle: str
    dataset: str
    size: int  # look-alike generation size, before resizing to ``shape``
    shape: tuple[int, ...] | None  # spatial shape of every image file (None: as written)
    train: dict[str, Any] = field(default_factory=dict)  # overrides of the brief training
    unit: str = "volume"
    spacing: tuple[float, ...] | None = None  # voxel size (mm) of the resized files, as in the real release


SPECS = {
    # NFBS and BraTS are released at 1 mm; a LiTS scan of 512 x 512 x 200 at 0.77 x 0.77 x 1 mm is resampled by
    # the bundle to its 2.5 mm slices (512 x 512 x 80); MSD prostate is 0.625 x 0.625 x 3.6 mm
    "nfbs": Spec("nfbs_brain_mri_segmentation", "nfbs", 96, (256, 256, 192),
                 {"patch_size": [64, 64, 64], "depth": 5, "num_samples": 2}, spacing=(1.0, 1.0, 1.0)),
    "brats": Spec("brats_tumor_mri_segmentation", "brats", 96, (240, 240, 155),
                  {"patch_size": [64, 64, 64], "depth": 5, "num_samples": 2}, spacing=(1.0, 1.0, 1.0)),
    "lits": Spec("lits_liver_ct_segmentation", "lits", 96, (512, 512, 200),
                 {"patch_size": [64, 64, 64], "depth": 5, "num_samples": 2}, spacing=(0.77, 0.77, 1.0)),
    "covidx": Spec("covidx_cxr_classification", "covidx", 256, None, {}, unit="image"),
    "prostate": Spec("prostate_mri_segmentation", "prostate", 96, (320, 320, 20), {}, unit="volume",
                     spacing=(0.625, 0.625, 3.6)),
}


def quick_spec(spec: Spec) -> Spec:
    """``spec`` at a quarter of the side (3D: 32-voxel training patches), for checking the command quickly."""
    if spec.shape is None:
        return replace(spec, size=64)
    shape = tuple(max(8, s // 4) for s in spec.shape)
    train = {k: v for k, v in spec.train.items() if k != "depth"}
    if "patch_size" in train:
        train["patch_size"] = [32, 32, 32]
    return replace(spec, size=32, shape=shape, train=train)  # the real spacing: a bundle resamples nothing more


# ---------------------------------------------------------------- data and model
def resize_nifti(path: Path, shape: tuple[int, ...], spacing: tuple[float, ...] | None = None,
                 smooth_images: bool = False) -> None:
    """Resample a NIfTI file's first three axes to ``shape`` (linear for floats, nearest for integers), in place.

    The affine's voxel sizes become ``spacing`` (the real release's, so that a bundle that resamples to its
    training spacing sees the real amount of work), or scale with the shape when it is None (the image keeps
    its physical extent). ``smooth_images``: signed-integer images (int16 CT and MR) are interpolated linearly
    too, so that up-sized edges are partial-volume ramps, not voxel steps; labels (unsigned) stay nearest.
    """
    import nibabel as nib
    from scipy.ndimage import zoom

    img = nib.load(str(path))
    data = np.asarray(img.dataobj)
    if tuple(data.shape[:3]) == tuple(shape) and (spacing is None or np.allclose(img.header.get_zooms()[:3], spacing)):
        return
    factors = [n / o for n, o in zip(shape, data.shape[:3])] + [1.0] * (data.ndim - 3)
    integer = np.issubdtype(data.dtype, np.integer)
    if integer and smooth_images and np.issubdtype(data.dtype, np.signedinteger):
        out = np.rint(zoom(data.astype(np.float32), factors, order=1)).astype(data.dtype)
    else:
        out = zoom(data, factors, order=0 if integer else 1).astype(data.dtype)
    affine = img.affine.copy()
    if spacing is None:
        affine[:3, :3] = affine[:3, :3] @ np.diag([o / n for n, o in zip(out.shape[:3], data.shape[:3])])
    else:
        affine[:3, :3] = affine[:3, :3] / np.linalg.norm(affine[:3, :3], axis=0) * np.asarray(spacing)
    nib.save(nib.Nifti1Image(out, affine, img.header), str(path))


def prepare_data(spec: Spec, root: Path, cases: int, hard: bool = False) -> tuple[str, str]:
    """Look-alike data of ``spec`` at its real size, and a 5-fold data list; cached in ``root``.

    ``hard`` (NFBS, LiTS): the look-alike's hard mode, generated at a finer grid (at least 128 voxels a side)
    and up-sized with linear interpolation, so that its fine structures survive at the real size.
    """
    from common.data.datalists import save_datalist
    from common.datasets import build_datalist, get_dataset, write_lookalike

    stamp = root / "data.json"
    datalist = root / "datalist.json"
    size = max(spec.size, 128) if hard else spec.size
    wanted = {"size": size, "shape": spec.shape, "spacing": spec.spacing, "cases": cases}
    if hard:
        wanted["hard"] = True
    wanted = json.loads(json.dumps(wanted))  # as stored
    if stamp.is_file() and json.loads(stamp.read_text()).get("wanted") == wanted:
        return json.loads(stamp.read_text())["dataset_dir"], str(datalist)
    dataset_dir = write_lookalike(spec.dataset, str(root / "data"), cases=cases, size=size, hard=hard)
    if spec.shape is not None:
        for path in sorted(Path(root / "data").rglob("*.nii*")):
            if not path.name.startswith("._"):
                resize_nifti(path, spec.shape, spec.spacing, smooth_images=hard)
    module = get_dataset(spec.dataset)
    if module.COMMITTED_LIST is None:
        build_datalist(spec.dataset, dataset_dir, out=str(datalist))
    else:  # LiTS, BraTS: the release's list, cut to the cases written, folds dealt round so each has some
        full = module.build_datalist()
        written = [e for e in full["training"]
                   if all(Path(dataset_dir, f).exists() for f in ([e["image"]] if isinstance(e["image"], str)
                                                                  else e["image"]))]
        full["training"] = [{**e, "fold": i % 5} for i, e in enumerate(written)]
        save_datalist(full, datalist)
    stamp.write_text(json.dumps({"wanted": wanted, "dataset_dir": dataset_dir}))
    return dataset_dir, str(datalist)


def train_briefly(spec: Spec, root: Path, dataset_dir: str, datalist: str, epochs: int, threads: int,
                  **net: Any) -> Path:
    """``models/model.pt`` from a short ``train.json`` run (no validation: the last epoch's weights)."""
    import torch
    from monai.bundle import ConfigWorkflow

    from common.training.checkpoints import latest_checkpoint

    ckpt = root / "models" / "model.pt"
    if ckpt.is_file():
        return ckpt
    cfg = BUNDLES_DIR / spec.bundle / "configs"
    wf = ConfigWorkflow(config_file=str(cfg / "train.json"), meta_file=str(cfg / "metadata.json"),
                        logging_file=str(cfg / "logging.conf"), workflow_type="train", bundle_root=str(root),
                        dataset_dir=dataset_dir, datalist=datalist, epochs=epochs, val_interval=epochs + 1,
                        cpu_threads=threads, **{**spec.train, **net})
    wf.initialize()
    wf.run()
    wf.finalize()
    last = latest_checkpoint(str(root / "models"))
    if last is None:
        raise FileNotFoundError(f"the brief training in {root} wrote no checkpoint.")
    torch.save(torch.load(last, map_location="cpu", weights_only=True)["model"], ckpt)
    return ckpt


# ---------------------------------------------------------------- one configuration, in its own process
def child(args: dict[str, Any]) -> None:
    """Run the bundle's inference over the benchmark volumes and print one ``RESULT {json}`` line."""
    t0 = args["t0"]
    from ignite.engine import Events
    from monai.bundle import ConfigWorkflow

    cfg = BUNDLES_DIR / args["bundle"] / "configs"
    engine, channels_last, bf16 = CONFIGS[args["config"]]
    override = {"dataset_dir": args["dataset_dir"], "output_dir": args["output_dir"], "engine": engine,
                "channels_last": channels_last, "bf16": bf16, "cpu_threads": args["threads"], **args["net"]}
    if args["window"] == "sliding":
        override["max_memory_gb"] = 0
    wf = ConfigWorkflow(config_file=str(cfg / "inference.json"), meta_file=str(cfg / "metadata.json"),
                        logging_file=False, workflow_type="infer", bundle_root=args["bundle_root"], **override)
    wf.parser["data"] = f"{wf.parser['data']}[:{args['volumes']}]"
    wf.initialize()
    evaluator = wf.parser.get_parsed_content("evaluator")
    stages = time_stages(evaluator, wf.parser.get_parsed_content("postprocessing"))
    times: list[float] = []
    shapes: list[list[int]] = []
    choices: list[str] = []
    marks: list[float] = []  # the epoch started (first volume requested), then each volume completed

    @evaluator.on(Events.EPOCH_STARTED)
    def _first_batch(engine: Any) -> None:
        marks.append(time.time())

    @evaluator.on(Events.ITERATION_COMPLETED)
    def _completed(engine: Any) -> None:
        marks.append(time.time())
        times.append(marks[-1] - marks[-2])
        batch = engine.state.batch
        image = batch[0]["image"] if isinstance(batch, list) else batch["image"][0]
        shapes.append(list(image.shape))
        choices.append(getattr(evaluator.inferer, "last_choice", ""))

    evaluator.run()
    result = {"startup_s": marks[0] - t0, "times": times, "shapes": shapes, "choices": choices,
              "engine": getattr(evaluator.network, "engine", "") or "torch", "stages": stages}
    print("RESULT " + json.dumps(result), flush=True)


def time_stages(evaluator: Any, postprocessing: Any) -> dict[str, list[float]]:
    """Seconds per volume of the inferer (network included) and of each post-processing transform, recorded
    while the evaluator runs (what the marginal time is made of; the rest is loading and the engine's loop)."""
    stages: dict[str, list[float]] = {}

    def timed(name: str, fn: Any) -> Any:
        def call(*a: Any, **k: Any) -> Any:
            start = time.perf_counter()
            out = fn(*a, **k)
            stages.setdefault(name, []).append(time.perf_counter() - start)
            return out

        return call

    inferer = evaluator.inferer
    evaluator.inferer = type("TimedInferer", (), {"__call__": staticmethod(timed("inferer", inferer)),
                                                  "last_choice": property(lambda _: inferer.last_choice)})()
    postprocessing.transforms = [type(t.__class__.__name__, (), {"__call__": staticmethod(timed(t.__class__.__name__,
                                                                                                 t))})()
                                 for t in postprocessing.transforms]
    return stages


def in_child(function: str, **kwargs: Any) -> Any:
    """``function(**kwargs)`` of this module in a fresh process (its output streams through); returns its result.

    Training, export and the peak measurement each run apart from the benchmark process, so that no runtime's
    threads or compiled models (OpenVINO, oneDNN) outlive their step in a process that later forks or trains.
    """
    code = ("import json, sys; from common.benchmarks import engines as m; "
            "r = getattr(m, sys.argv[1])(**json.loads(sys.argv[2])); print('RESULT ' + json.dumps(r), flush=True)")
    proc = subprocess.run([sys.executable, "-c", code, function, json.dumps(kwargs)], stdout=subprocess.PIPE,
                          text=True)
    found = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
    sys.stdout.write("".join(ln + "\n" for ln in proc.stdout.splitlines() if not ln.startswith("RESULT ")))
    if proc.returncode != 0 or not found:
        raise RuntimeError(f"{function} failed in its own process (exit status {proc.returncode}).")
    return json.loads(found[-1][len("RESULT "):])


def prepare_model(bundle: str, root: str, dataset_dir: str, datalist: str, epochs: int, threads: int,
                  net: dict[str, Any], train: dict[str, Any]) -> str:
    """Brief training (if no ``model.pt``) and ``pocket engines`` (if not recorded yet); returns the engine table."""
    from common.engines.choose import engines, render
    from common.engines.record import read_record

    spec = next(s for s in SPECS.values() if s.bundle == bundle)
    spec = replace(spec, train=train)
    train_briefly(spec, Path(root), dataset_dir, datalist, epochs, threads, **net)
    record = read_record(Path(root) / "models")
    if record is not None and "scores" in record:
        return render(record, Path(root) / "models")
    # 3D: one validation case (torch's sliding window takes minutes); 2D: the whole (small) validation fold
    return engines(bundle, dataset_dir, datalist, bundle_root=root, calibration_cases=4, calibration_samples=32,
                   score_cases=1 if "patch_size" in train else 0, cpu_threads=threads, **net)


def run_child(args: dict[str, Any], max_rss: float) -> dict[str, Any]:
    """Run ``child(args)`` in a fresh process; peak RSS of it and its workers; ``OOM`` above ``max_rss``."""
    import psutil

    args = {**args, "t0": time.time()}
    code = "import json, sys; from common.benchmarks.engines import child; child(json.loads(sys.argv[1]))"
    proc = subprocess.Popen([sys.executable, "-c", code, json.dumps(args)], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    ps = psutil.Process(proc.pid)
    peak, oom = 0, False
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(proc.stdout), daemon=True)
    reader.start()
    while proc.poll() is None:
        try:
            rss = ps.memory_info().rss + sum(c.memory_info().rss for c in ps.children(recursive=True))
        except psutil.Error:
            rss = 0
        peak = max(peak, rss)
        if rss > max_rss:
            oom = True
            for p in [*ps.children(recursive=True), ps]:
                try:
                    p.kill()
                except psutil.Error:
                    pass
            break
        time.sleep(0.05)
    proc.wait()
    reader.join(timeout=5)
    found = [ln for ln in lines if ln.startswith("RESULT ")]
    if oom or not found:
        tail = "".join(lines[-5:]).strip().splitlines()[-1:] if lines else []
        return {"status": "OOM" if oom else f"failed: {tail[0] if tail else proc.returncode}", "peak_rss": peak}
    return {"status": "ok", "peak_rss": peak, **json.loads(found[-1][len("RESULT "):])}


# ---------------------------------------------------------------- figures
def label_maps(folder: Path) -> dict[str, np.ndarray]:
    """The label maps (NIfTI) or predicted classes (a classifier's CSV) a run wrote, by file name."""
    import nibabel as nib

    maps = {p.name: np.asarray(nib.load(str(p)).dataobj) for p in sorted(folder.rglob("*.nii*"))}
    for csv in sorted(folder.rglob("*.csv")):
        rows = csv.read_text().splitlines()[1:]
        maps.update({r.split(",")[0]: np.array([r.split(",")[1]]) for r in rows if r})
    return maps


def agreement(maps: dict[str, np.ndarray], reference: dict[str, np.ndarray]) -> float | None:
    """Mean Dice of the foreground (labels > 0) against ``reference``; for class predictions, share equal."""
    values = []
    for name, ref in reference.items():
        if name not in maps:
            return None
        pred = maps[name]
        if pred.dtype.kind in "US":
            values.append(float(np.all(pred == ref)))
            continue
        a, b = pred > 0, ref > 0
        total = a.sum() + b.sum()
        values.append(1.0 if total == 0 else 2.0 * float((a & b).sum()) / float(total))
    return float(np.mean(values)) if values else None


def windows_processed(shape: list[int], roi: list[int], overlap: float = 0.5) -> int:
    """Number of sliding windows MONAI's inferer computes on ``shape`` (the spatial size) with ``roi``."""
    n = 1
    for s, r in zip(shape, roi):
        interval = max(int(r * (1 - overlap)), 1)
        n *= 1 if s <= r else math.ceil((s - r) / interval) + 1
    return n


def peaks(threads: int) -> dict[str, float]:
    """The machine's measured conv peak, GOPS: one 3x3x3 128->128 convolution on 32^3 with OpenVINO, fp32 and
    INT8 (NNCF), the best the runtime does on this CPU; fp32 is at least MKL's GEMM rate."""
    import torch

    from common.engines.runtime import openvino_core
    from common.training.cpu import gemm_gflops

    torch.set_num_threads(threads)
    result = {"fp32": gemm_gflops(2048)}
    try:
        import nncf
        import openvino
        import openvino.opset13 as ops
    except ImportError:
        return result
    c, side = 128, 32
    x = ops.parameter([1, c, side, side, side], np.float32)
    w = ops.constant(0.05 * np.random.default_rng(0).standard_normal((c, c, 3, 3, 3)).astype(np.float32))
    model = openvino.Model([ops.relu(ops.convolution(x, w, [1, 1, 1], [1, 1, 1], [1, 1, 1], [1, 1, 1]))], [x])
    data = [np.random.default_rng(i).standard_normal((1, c, side, side, side)).astype(np.float32) for i in range(4)]
    int8 = nncf.quantize(model, nncf.Dataset(data), subset_size=4)
    for name, m, hint in (("fp32", model, {"INFERENCE_PRECISION_HINT": "f32"}), ("int8", int8, {})):
        compiled = openvino_core().compile_model(m, "CPU", {"INFERENCE_NUM_THREADS": threads,
                                                            "PERFORMANCE_HINT": "LATENCY", **hint})
        compiled(data[0])
        t0 = time.perf_counter()
        for _ in range(5):
            compiled(data[0])
        gops = 2 * c * c * 27 * side**3 * 5 / (time.perf_counter() - t0) / 1e9
        result[name] = max(result.get(name, 0.0), gops)
    return result


def macs_per_voxel(bundle: str, bundle_root: Path, **net: Any) -> tuple[float, list[int] | None, int]:
    """MACs per input voxel of the bundle's network (counted on a small input), its window, and its input dims."""
    from monai.bundle import ConfigParser

    from common.benchmarks.complexity import count_macs

    parser = ConfigParser()
    parser.read_config(str(BUNDLES_DIR / bundle / "configs" / "inference.json"))
    parser.update({"bundle_root": str(bundle_root), **net})
    network = parser.get_parsed_content("network_def")
    roi = parser.get_parsed_content("patch_size") if "patch_size" in parser else None
    channels = parser.get_parsed_content("in_channels")
    spatial = len(roi) if roi else 2
    side = min(roi) if roi else max(getattr(network, "multiple", [16] * spatial)) * 2
    if "input_size" in parser:  # the low-resolution bundle: its network sees input_size slices
        side = int(parser.get_parsed_content("input_size"))
    macs = count_macs(network, [channels] + [side] * spatial)
    return macs / side**spatial, roi, spatial


def network_voxels(result: dict[str, Any], roi: list[int] | None, multiple: list[int] | None) -> float:
    """Input voxels the network computed per volume (after the first): windows x window, or the padded volume."""
    from common.inference.budget import whole_window

    counts = []
    for shape, choice in list(zip(result["shapes"], result["choices"]))[1:] or zip(result["shapes"],
                                                                                   result["choices"]):
        spatial = shape[1:]
        if roi is None:
            counts.append(float(np.prod(spatial)))
        elif choice.startswith("whole") and multiple:
            counts.append(float(np.prod(whole_window(spatial, multiple))))
        else:
            counts.append(float(windows_processed(spatial, roi) * np.prod(roi)))
    return float(np.mean(counts))


def engine_benchmark(
    bundles: str | tuple[str, ...] = "nfbs",
    widths: str | tuple[str, ...] = "pocket,full",
    configs: str | tuple[str, ...] = ",".join(CONFIGS),
    windows: str | tuple[str, ...] = "sliding,budget",
    volumes: int = 2,
    threads: int = 2,
    epochs: int = 4,
    cases: int = 8,
    work_dir: str = "engine_benchmark",
    max_rss_gb: float | None = None,
    quick: bool = False,
) -> str:
    """Seconds per volume, peak memory and Dice vs torch of every engine on each bundle at real size (tables).

    Args:
        bundles: comma-separated, of ``nfbs``, ``brats``, ``lits``, ``covidx``, ``prostate``.
        widths: ``pocket`` and/or ``full`` (the bundle's network with doubling widths).
        configs: of ``torch_eager``, ``torch_channels_last``, ``torch_bf16``, ``onnxruntime``, ``openvino``,
            ``openvino_int8``.
        windows: ``sliding`` (the bundle's sliding window) and/or ``budget`` (whole volume when it fits).
        volumes: volumes per configuration (the first is reported apart; 2 or more give the marginal cost).
        threads: CPU threads of every engine.
        epochs: epochs of the brief training on look-alike data.
        cases: look-alike cases written per bundle (training, validation and the benchmark volumes).
        work_dir: cache of data, trained models, exports and outputs.
        max_rss_gb: a configuration above it is stopped and reported as OOM (default: 80 % of the RAM).
        quick: a check of the command itself: volumes a quarter of the real side, 32-voxel windows, one epoch.
    """
    import psutil

    from common.engines.record import read_record

    def names(v: str | tuple[str, ...]) -> list[str]:
        return [s for s in (v.split(",") if isinstance(v, str) else list(v)) if s]

    bundle_names, width_names = names(bundles), names(widths)
    config_names, window_names = names(configs), names(windows)
    for group, allowed in ((bundle_names, SPECS), (width_names, ("pocket", "full")), (config_names, CONFIGS),
                           (window_names, WINDOWS)):
        bad = [g for g in group if g not in allowed]
        if bad:
            raise InvalidInputError(f"unknown {bad}: choose from {', '.join(allowed)}.")
    cap = (max_rss_gb * 1024**3) if max_rss_gb else 0.8 * psutil.virtual_memory().total
    work = Path(work_dir).resolve()
    peak = in_child("peaks", threads=threads)
    out = [f"Engine benchmark: {threads} threads, limit {cap / 1024**3:.1f} GB RSS per configuration; machine "
           f"conv peak fp32 {peak['fp32']:.0f} GFLOP/s, int8 {peak.get('int8', float('nan')):.0f} GOPS "
           f"(one 3x3x3 conv, OpenVINO; fp32 at least the MKL GEMM rate)."]
    for name in bundle_names:
        spec = SPECS[name]
        extra: dict[str, Any] = {}
        if quick:
            spec, extra, epochs = quick_spec(spec), ({"patch_size": [32, 32, 32]} if spec.shape else {}), 1
        dataset_dir, datalist = prepare_data(spec, work / name, cases)
        for width in width_names:
            if width == "full" and spec.dataset in ("prostate",):
                continue
            net = {"pocket": width == "pocket", **extra}
            root = work / name / width
            out.append(in_child("prepare_model", bundle=spec.bundle, root=str(root), dataset_dir=dataset_dir,
                                datalist=datalist, epochs=epochs, threads=threads, net=net, train=spec.train))
            record = read_record(root / "models")
            per_voxel, roi, _ = macs_per_voxel(spec.bundle, root, **net)
            rows: dict[tuple[str, str], dict[str, Any]] = {}
            for config in config_names:
                for window in window_names:
                    if window == "budget" and roi is None:
                        continue  # 2D bundles: no window to choose
                    args = {"bundle": spec.bundle, "bundle_root": str(root), "dataset_dir": dataset_dir,
                            "output_dir": str(root / "bench" / f"{config}_{window}"), "config": config,
                            "window": window, "threads": threads, "volumes": volumes, "net": net}
                    rows[config, window] = {**run_child(args, cap), "folder": args["output_dir"]}
                    print(f"[engine_benchmark] {name} {width} {config} {window}: {_brief(rows[config, window])}",
                          flush=True)
            out.append(render(name, width, spec, rows, record, per_voxel, roi, peak, threads))
            print(out[-1], file=sys.stderr, flush=True)  # as soon as measured; all tables are returned at the end
    return "\n\n".join(out)


def _fmt(value: float | None, spec: str) -> str:
    return "" if value is None else format(value, spec)


def _brief(row: dict[str, Any]) -> str:
    if row["status"] != "ok":
        return row["status"]
    return f"{np.mean(row['times'][1:] or row['times']):.2f} s/volume, {row['peak_rss'] / 1024**3:.1f} GB"


def render(name: str, width: str, spec: Spec, rows: dict[tuple[str, str], dict[str, Any]],
           record: dict[str, Any] | None, per_voxel: float, roi: list[int] | None, peak: dict[str, float],
           threads: int) -> str:
    """One bundle's table (markdown)."""
    ref = rows.get(REFERENCE)
    ref_maps = label_maps(Path(ref["folder"])) if ref and ref["status"] == "ok" else None
    ref_time = np.mean(ref["times"][1:] or ref["times"]) if ref and ref["status"] == "ok" else None
    multiple = (record or {}).get("multiple")
    lines = [f"### {name} ({spec.bundle}), {width} network, shape {spec.shape or 'as written'}",
             "", f"| configuration | window | start-up s | first s | marginal s/{spec.unit} | peak RSS GB | x eager | "
             "GOPS | % peak | Dice vs torch | window used |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    for (config, window), row in rows.items():
        if row["status"] != "ok":
            lines.append(f"| {config} | {window} | | | {row['status']} | {row['peak_rss'] / 1024**3:.1f} | | | | | |")
            continue
        marginal = float(np.mean(row["times"][1:] or row["times"]))
        gops = 2 * per_voxel * network_voxels(row, roi, multiple) / marginal / 1e9 if roi else None
        limit = peak.get("int8") if config == "openvino_int8" else peak["fp32"]
        folder = Path(row["folder"])
        dice = agreement(label_maps(folder), ref_maps) if ref_maps is not None else None
        whole = sum(c.startswith("whole") for c in row["choices"])
        used = "-" if roi is None else {0: "sliding", len(row["choices"]): "whole"}.get(whole, f"whole {whole}/"
                                                                                          f"{len(row['choices'])}")
        lines.append(
            f"| {config} | {window} | {row['startup_s']:.1f} | {row['times'][0]:.2f} | {marginal:.2f} | "
            f"{row['peak_rss'] / 1024**3:.1f} | {'' if ref_time is None else f'{ref_time / marginal:.1f}'} | "
            f"{_fmt(gops, '.0f')} | {_fmt(100 * gops / limit if gops and limit else None, '.0f')} | "
            f"{'' if dice is None else f'{dice:.4f}'} | {used} |")
    stage_lines = [f"- {config} {window}: " + ", ".join(f"{name} {np.mean(t[1:] or t):.2f}"
                                                         for name, t in row["stages"].items())
                   for (config, window), row in rows.items() if row["status"] == "ok" and row.get("stages")]
    if stage_lines:
        lines += ["", "Marginal seconds per stage (inferer = network and windowing; the rest of the marginal time is "
                  "loading, collation and the engine's own loop):", *stage_lines]
    if record and "scores" in record:
        lines.append(f"\nengine chosen by `pocket engines` ({record.get('cases_scored', '?')} validation cases): "
                     f"{record['chosen']}; "
                     f"bytes/voxel {record.get('bytes_per_voxel', {})}")
    return "\n".join(lines)
