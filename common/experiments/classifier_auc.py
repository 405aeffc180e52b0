"""Full against pocket classifier on the COVIDx test split: AUC with a bootstrap interval (PocketNet, Table II).

Celaya et al., "PocketNet: A Smaller Neural Network for Medical Image Analysis" (IEEE TMI 2022), Table II compares
the full and pocket COVIDx classifiers by their AUC on the test split. One AUC per model has no per-case pairs for
a Wilcoxon test, so the comparison here is a percentile bootstrap 95 % interval per model and a paired bootstrap
p-value of the pocket-minus-full difference (:mod:`common.experiments.statistics`), with both models scored on the
same test images (matched by file name). Each variant is one run of the COVIDx bundle: ``train.json`` (fold 0
validates, for model selection), then ``evaluate.json`` with ``eval_split=test``, whose ``predictions.csv`` holds
each image's probabilities. ``pocket experiment table1 --task covidx`` runs it.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from common.errors import InvalidInputError
from common.experiments.inputs import experiment_data
from common.experiments.runs import Run, run_all
from common.experiments.statistics import bootstrap_auc, paired_bootstrap_auc, stars

__all__ = ["BUNDLE", "run", "scores_on_test_split"]

BUNDLE = "covidx_cxr_classification"


def scores_on_test_split(run_dir: Path) -> dict[str, tuple[int, float]]:
    """``{image file: (label, probability of positive)}`` from a run's ``eval/test/predictions.csv``."""
    with open(run_dir / "eval" / "test" / "predictions.csv", newline="") as f:
        return {r["filename"]: (int(r["label"]), float(r["probability_positive"])) for r in csv.DictReader(f)}


def run(
    variants: Sequence[str] = ("full", "pocket"),
    out: str = "/tmp/pocketnet_table2",
    dataset_dir: str | None = None,
    datalist: str | None = None,
    cases: int = 80,
    size: int = 128,
    jobs: int = 1,
    executor: str = "local",
    address: str | None = None,
    threads: int = 1,
    seed: int = 0,
    bootstrap: int = 2000,
    **override: Any,
) -> str:
    """Train and test the full and pocket classifiers; write report.md / report.csv; return the Markdown table."""
    work = Path(out)
    work.mkdir(parents=True, exist_ok=True)
    dataset_dir, datalist = experiment_data("covidx", work, dataset_dir, datalist, cases, size, seed)
    runs = [Run(name=f"classifier-{v}", bundle=BUNDLE, train=["train.json"], evaluate=["train.json", "evaluate.json"],
                overrides={"dataset_dir": str(dataset_dir), "datalist": str(datalist), "fold": 0, "arch": "classifier",
                           "pocket": v == "pocket", "cpu_threads": threads, "seed": seed, **override},
                evaluate_overrides={"eval_split": "test"}, cpus=threads)
            for v in variants]
    dirs = run_all(runs, work, name="table2", jobs=jobs, executor=executor, address=address)
    scores = {v: scores_on_test_split(dirs[f"classifier-{v}"]) for v in variants}
    rows, md = [], ["# COVIDx: full vs pocket classifier on the test split", "",
                    "| variant | parameters (M) | test images | AUC | 95% CI (bootstrap) | pocket - full | p |",
                    "|---|---:|---:|---:|---|---:|---|"]
    ids = sorted(set.intersection(*(set(s) for s in scores.values())))
    if not ids:
        raise InvalidInputError(f"{datalist}: the variants scored no test image in common.")
    labels = [scores[variants[0]][i][0] for i in ids]
    for v in variants:
        params = json.loads((dirs[f"classifier-{v}"] / "finished.json").read_text())["parameters"]
        auc, low, high = bootstrap_auc(labels, [scores[v][i][1] for i in ids], n=bootstrap, seed=seed)
        diff, test = (None, None)
        if v == "pocket" and "full" in variants:
            diff, test = paired_bootstrap_auc(labels, [scores["pocket"][i][1] for i in ids],
                                              [scores["full"][i][1] for i in ids], n=bootstrap, seed=seed)
        rows.append({"variant": v, "parameters": params, "n": len(ids), "auc": auc, "ci_low": low, "ci_high": high,
                     "auc_difference": "" if diff is None else diff, "p_bootstrap": "" if test is None else test.p,
                     "significance": "" if test is None else stars(test.p), "note": "" if test is None else test.note})
        md.append(f"| {v} | {params / 1e6:.3f} | {len(ids)} | {auc:.3f} | [{low:.3f}, {high:.3f}] | "
                  f"{'–' if diff is None else f'{diff:+.3f}'} | "
                  f"{'–' if test is None else f'{test.p:.3f} {stars(test.p)}'} |")
    md += ["", f"AUC of the positive class on the {len(ids)} test images both models scored; interval: percentile "
           f"bootstrap ({bootstrap} resamples of the images); p: paired bootstrap of the AUC difference (two-sided)."]
    text = "\n".join(md) + "\n"
    (work / "report.md").write_text(text)
    with open(work / "report.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return text
