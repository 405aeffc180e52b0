"""The dataset registry behind ``pocket lookalike`` and ``pocket datalist``: dispatch, answers, refusals."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from lookalike_checks import read_tree

from common import REPO_ROOT
from common.datasets import DATASETS, build_datalist, get_dataset, write_all, write_lookalike

# the smallest arguments that still give every structure, per registered dataset
TINY = {
    "nfbs": dict(cases=2, size=20),
    "lits": dict(cases=2, size=20),
    "brats": dict(cases=2, size=24),
    "covidx": dict(cases=5, size=48),
    "prostate": dict(cases=2, size=24),
}


def test_every_module_offers_the_three_names() -> None:
    assert set(TINY) == set(DATASETS)  # a new dataset gets its tiny arguments here
    for module in DATASETS.values():
        assert callable(module.build_datalist) and callable(module.write_lookalike)
        assert module.COMMITTED_LIST is None or module.COMMITTED_LIST.endswith(".json")


def test_unknown_dataset_is_one_sentence_naming_the_valid_ones(tmp_path: Path) -> None:
    for call in (lambda: write_lookalike("kits", str(tmp_path)), lambda: get_dataset("kits")):
        with pytest.raises(ValueError) as err:
            call()
        assert str(err.value) == "unknown dataset 'kits'; valid names: brats, covidx, lits, nfbs, prostate."
    with pytest.raises(ValueError) as err:
        build_datalist("kits")
    assert str(err.value) == "unknown dataset 'kits'; valid names: all, brats, covidx, lits, nfbs, prostate."


# ---------------------------------------------------------------------------------------- look-alike
@pytest.mark.parametrize("dataset", sorted(TINY))
def test_lookalike_is_deterministic(dataset: str, tmp_path: Path) -> None:
    a = read_tree(write_lookalike(dataset, str(tmp_path / "a"), seed=3, **TINY[dataset]))
    b = read_tree(write_lookalike(dataset, str(tmp_path / "b"), seed=3, **TINY[dataset]))
    c = read_tree(write_lookalike(dataset, str(tmp_path / "c"), seed=4, **TINY[dataset]))
    assert a.keys() == b.keys() and len(a) > 0
    for k in a:
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)
    # another seed gives other data (file names may differ too, e.g. NFBS IDs and COVIDx names)
    shared = [k for k in a if k in c and isinstance(a[k], np.ndarray) and not k.endswith(":affine")]
    assert a.keys() != c.keys() or any(
        a[k].shape != c[k].shape or not np.array_equal(a[k], c[k]) for k in shared
    )


def test_lookalike_answers_with_the_root_and_reports_each_case(tmp_path: Path, capsys) -> None:
    root = write_lookalike("nfbs", str(tmp_path / "cli"), cases=2, size=20)
    assert root == str(tmp_path / "cli" / "NFBS_Dataset")
    assert capsys.readouterr().out.count("[nfbs]") == 2
    subjects = sorted(p.name for p in Path(root).iterdir())
    assert len(subjects) == 2 and len(list((Path(root) / subjects[0]).iterdir())) == 3


def test_lookalike_ids_are_for_brats_only(tmp_path: Path) -> None:
    root = write_lookalike("brats", str(tmp_path), size=16, ids=[355])
    assert (Path(root) / "BraTS20_Training_355" / "W39_1998.09.19_Segm.nii").is_file()
    with pytest.raises(ValueError, match="brats look-alike only"):
        write_lookalike("lits", str(tmp_path), ids=[1])


def test_hard_mode_is_for_nfbs_and_lits_only(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="nfbs and lits look-alikes only, not to covidx"):
        write_lookalike("covidx", str(tmp_path), hard=True)


# ----------------------------------------------------------------------------------------- data list
def test_write_all_reproduces_the_committed_lists(tmp_path: Path) -> None:
    written = write_all(str(tmp_path))
    assert sorted(Path(p).name for p in written) == ["brats2020.json", "lits.json"]
    for name in ("lits.json", "brats2020.json"):  # the committed files are exactly what the command writes
        assert (REPO_ROOT / "data_lists" / name).read_bytes() == (tmp_path / name).read_bytes()
    assert build_datalist("all", out=str(tmp_path / "again")) == (
        f"wrote {tmp_path / 'again' / 'brats2020.json'}, {tmp_path / 'again' / 'lits.json'}"
    )


def test_datalist_answers_json_or_a_summary(tmp_path: Path) -> None:
    text = build_datalist("lits")
    assert json.loads(text) == get_dataset("lits").build_datalist()
    assert text.count("\n") > 131  # one case per line
    out = tmp_path / "lits.json"
    assert build_datalist("lits", out=str(out), suffix=".nii.gz") == (
        f"wrote {out}: 131 training cases in 5 folds, 0 testing cases"
    )
    assert json.loads(out.read_text())["training"][0]["image"] == "volume-0.nii.gz"


def test_datalist_from_a_download(tmp_path: Path) -> None:
    root = write_lookalike("prostate", str(tmp_path), cases=2, size=16)
    out = tmp_path / "msd.json"
    answer = build_datalist("prostate", root, out=str(out))
    assert answer == f"wrote {out}: 2 training cases in 5 folds, 1 testing cases"
    assert json.loads(build_datalist("prostate", root)) == json.loads(out.read_text())


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (("nfbs",), "pass its folder as dataset_dir"),
        (("lits", "/data/lits"), "takes no dataset_dir"),
        (("covidx", "/data/covidx", None, ".nii.gz"), "suffix applies to the lits and brats lists only"),
        (("all", "/data"), "takes no dataset_dir or suffix"),
    ],
)
def test_datalist_refuses_arguments_that_do_not_apply(args: tuple, words: str) -> None:
    with pytest.raises(ValueError, match=words):
        build_datalist(*args)
