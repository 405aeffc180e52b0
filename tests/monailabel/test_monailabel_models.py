"""What the MONAI Label app serves and how it is started, checked without the server (no monailabel needed)."""

from __future__ import annotations

import pytest
from bundle_helpers import BUNDLES

from common.__main__ import main
from common.monailabel.environment import CONSTRAINTS, REQUIREMENTS
from common.monailabel.models import bundle_dirs, model_names
from common.monailabel.server import APP, server_command


def test_every_bundle_and_its_variants_have_a_model_name(tmp_path):
    names = {b.name: set(model_names(b, tmp_path / "no_models")) for b in bundle_dirs(BUNDLES)}
    assert set(names) == {"brats_tumor_mri_segmentation", "covidx_cxr_classification", "lits_liver_ct_segmentation",
                          "nfbs_brain_mri_segmentation", "prostate_mri_segmentation"}
    lits, brats = "lits_liver_ct_segmentation", "brats_tumor_mri_segmentation"
    assert names[lits] == {lits, f"{lits}_cascade", f"{lits}_slab", f"{lits}_short_2d"}
    assert names[brats] == {brats, f"{brats}_cascade", f"{brats}_slab", f"{brats}_lowres_2d", f"{brats}_regions"}
    assert names["nfbs_brain_mri_segmentation"] == {"nfbs_brain_mri_segmentation", "nfbs_brain_mri_segmentation_short"}
    assert names["covidx_cxr_classification"] == {"covidx_cxr_classification"}  # no engine exported: none listed


def test_server_command_runs_this_app_on_the_studies(tmp_path):
    cmd = server_command("/venv/bin/python", tmp_path, port=8123, models="nfbs_brain_mri_segmentation",
                         models_root=tmp_path / "m", skip_trainers=True)
    assert cmd[:4] == ["/venv/bin/python", "-m", "monailabel.main", "start_server"]
    assert cmd[cmd.index("--app") + 1] == str(APP) and (APP / "main.py").is_file()
    joined = " ".join(cmd)
    for part in (f"--studies {tmp_path}", "--port 8123", "--conf models nfbs_brain_mri_segmentation",
                 f"--conf models_root {tmp_path / 'm'}", "--conf skip_trainers true", f"--conf bundles {BUNDLES}"):
        assert part in joined


@pytest.mark.parametrize("args, sentence", [
    ([], "--studies is needed"),
    (["--studies", "/no/such/folder"], "/no/such/folder: the studies folder does not exist."),
])
def test_monailabel_command_refuses_bad_arguments_before_any_set_up(args, sentence, capsys):
    with pytest.raises(SystemExit) as exc:
        main(["monailabel", *args])
    assert exc.value.code == 1
    err = capsys.readouterr().err
    assert sentence in err and "Traceback" not in err


def test_environment_keeps_monailabel_requirements_apart_and_pinned():
    requirements = [line.split("#")[0].strip() for line in REQUIREMENTS.read_text().splitlines()]
    pins = dict(line.split("==") for line in CONSTRAINTS.read_text().splitlines() if "==" in line)
    # sam2 kept out: a CUDA extension built from source, needed only by MONAI Label's SAM2 tasks
    assert not [r for r in requirements if r.startswith("sam2")] and "sam2" not in pins
    assert pins["monailabel"] == "0.8.5" and pins["numpy"].startswith("1.") and pins["pydicom"].startswith("2.")
    assert pins["torch"] == "2.14.1" and pins["torchvision"] == "0.29.1"
    assert int(pins["dicomweb-client"].split(".")[1]) < 60 and pins["pynetdicom"].startswith("2.")
