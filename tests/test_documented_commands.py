"""Every command the README, the model cards and docs/ show works as written.

The ``bash`` blocks and the inline commands of the documents are read as a user would copy them (a model card's
commands run from its bundle folder, a ``cd`` moves on). Then:

- ``pocket ...`` / ``python -m common ...``: the command and every flag exist; the commands in ``RUN`` are run, in
  order, in a copy of the repository on look-alike data (placeholders such as ``/data/LiTS`` or ``$DATA`` point at
  look-alike data in the dataset's real layout, ``/tmp/...`` at a temporary folder); the long ones in ``HELP_ONLY``
  are exercised by their own tests at small sizes and only answer ``--help`` here.
- ``python -m monai.bundle run ...`` and ``torchrun ... -m monai.bundle run ...``: the config files exist, the merged
  stack parses, the run id and every ``--key`` override name a key of it (trainings run in tests/bundles/);
  ``verify_metadata``, ``verify_net_in_out`` and ``ckpt_export`` (on weights made from ``network_def``) run.
- option lines (``--arch densenet --pocket False``) name keys of the bundle's train.json; ``python -c`` snippets
  and python blocks compile and import what they name.
"""

from __future__ import annotations

import ast
import dataclasses
import importlib
import inspect
import re
import shlex
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from common import REPO_ROOT
from common.__main__ import COMMANDS, Group, main

DOCS = sorted(
    [REPO_ROOT / "README.md", *REPO_ROOT.glob("docs/*.md"), *REPO_ROOT.glob("bundles/*/docs/README.md"),
     REPO_ROOT / "data_lists" / "README.md"]
)
#: Commands that take minutes to hours at their documented sizes; their functions run in their own tests.
HELP_ONLY = {
    "demo": "tests/test_demo.py runs the demo",
    "profile": "tests/benchmarks/test_profile.py runs the quick profile",
    "memory": "tests/inference/test_slabs_cascade.py runs a tiny memory benchmark",
    "cpu_options": "tests/training/test_cpu_options.py runs the A/B on a 2D bundle",
    "experiment": "tests/experiments/ and tests/bundles/test_bundle_{cascade,prostate,brats_lowres}.py run them small",
    "engines": "tests/bundles/test_bundle_*.py run it on each bundle's trained model",
    "engine_benchmark": "tests/benchmarks/test_engine_benchmark.py runs it --quick",
}
#: Shell lines that are not ours to run here (package managers, the MONAI Label server, shell plumbing; the
#: unpacking of the model cards' "Your data" sections runs in tests/test_your_data.py).
NOT_OURS = ("pip", "monailabel", "ln", "export", "tox", "git", "tensorboard", "mlflow", "cp", "python3.11",
            "python3", "rm", "mkdir", "tar", "unzip", "mv")
SCRIPTS = ("bash scripts/demo.sh", "bash scripts/test.sh")
#: Keys `monai.bundle run` takes itself rather than from the config.
RUN_ARGS = {"config_file", "meta_file", "logging_file", "init_id", "run_id", "final_id", "tracking", "args_file"}


@dataclasses.dataclass
class Command:
    doc: Path
    line: int
    text: str
    cwd: str  # relative to the repository ("" = its root), or an absolute /tmp path
    inline: bool = False  # named in a sentence (checked) rather than given in a bash block (also run)

    @property
    def where(self) -> str:
        return f"{self.doc.relative_to(REPO_ROOT)}:{self.line}"

    @property
    def bundle(self) -> str | None:
        parts = Path(self.cwd).parts
        return parts[1] if len(parts) > 1 and parts[0] == "bundles" else None

    def argv(self) -> list[str]:
        return shlex.split(self.text)


def _default_cwd(doc: Path) -> str:
    rel = doc.relative_to(REPO_ROOT)
    return str(Path(*rel.parts[:2])) if rel.parts[0] == "bundles" else ""


def _resolve_cd(cwd: str, target: str, copies: dict[str, str]) -> str:
    """Where ``cd target`` leads: ``bundles/...`` is written from the repository root, a copied bundle
    stands for its source."""
    if target in copies:
        return copies[target]
    if target.startswith(("/", "bundles/")):
        return target
    return str(Path(cwd, target))


def _logical_lines(lines: list[tuple[int, str]]) -> Iterator[tuple[int, str]]:
    """Join ``\\`` continuations and lines inside an open quote; drop comments."""
    buf, start = "", 0
    for number, raw in lines:
        if not buf:
            start = number
        buf = f"{buf}\n{raw}" if buf else raw
        if buf.endswith("\\"):
            buf = buf[:-1]
            continue
        try:
            tokens = shlex.split(buf, comments=True)
        except ValueError:  # an open quote: the command goes on on the next line
            continue
        if tokens:
            yield start, shlex.join(tokens) if not buf.lstrip().startswith("python -c") else buf.strip()
        buf = ""
    assert not buf, f"unterminated command at line {start}: {buf!r}"


def documented(kind: str) -> list[Command]:
    """The documents' commands of one kind: "shell" (bash blocks and inline commands) or "python" (blocks)."""
    found: list[Command] = []
    for doc in DOCS:
        copies: dict[str, str] = {}
        text = doc.read_text().splitlines()
        fence, block, cwd = None, [], _default_cwd(doc)
        for number, line in enumerate(text, 1):
            if line.startswith("```"):
                if fence is None:
                    fence, block, cwd = line[3:].strip(), [], _default_cwd(doc)
                    continue
                if fence == "bash" and kind == "shell":
                    for start, cmd in _logical_lines(block):
                        argv = shlex.split(cmd) if not cmd.startswith("python -c") else ["python"]
                        if argv[0] == "cd":
                            cwd = _resolve_cd(cwd, argv[1], copies)
                            continue
                        if argv[:2] == ["cp", "-r"]:  # a copy of a bundle: commands in the copy check against it
                            copies[argv[3]] = str(Path(cwd, argv[2])) if argv[2] != "." else cwd
                        found.append(Command(doc, start, cmd, cwd))
                elif fence == "python" and kind == "python":
                    found.append(Command(doc, block[0][0] if block else number, "\n".join(t for _, t in block), cwd))
                fence = None
                continue
            if fence is not None:
                block.append((number, line))
            elif kind == "shell":
                for span in re.findall(r"`([^`]+)`", line):
                    pattern = "..." in span or "<" in span  # "pocket <command>": a pattern, not a command
                    if re.match(r"(pocket|python -m (common|monai\.bundle)) ", span) and not pattern:
                        found.append(Command(doc, number, span, _default_cwd(doc), inline=True))
    return found


SHELL = documented("shell")


def _ids(commands: list[Command]) -> list[str]:
    return [f"{c.where} {c.text[:60]}" for c in commands]


# ----------------------------------------------------------------------------------------- our command line
def _cli_argv(cmd: Command) -> list[str] | None:
    argv = cmd.argv()
    if argv[0] == "pocket":
        return argv[1:]
    if argv[:3] == ["python", "-m", "common"]:
        return argv[3:]
    return None


def _function(argv: list[str]) -> tuple[str, Any, list[str]]:
    if argv == ["--help"]:
        return "--help", main, []
    name, rest = argv[0], argv[1:]
    assert name in COMMANDS, f"unknown command {name!r}; the commands are {sorted(COMMANDS)}"
    fn = COMMANDS[name]
    if isinstance(fn, Group):
        subs = fn.commands()
        assert rest and rest[0] in subs, f"{name} needs one of {sorted(subs)}"
        fn, rest = subs[rest[0]], rest[1:]
    return name, inspect.unwrap(fn), rest


def _flags(rest: list[str]) -> tuple[list[str], dict[str, str | bool]]:
    """Positional arguments and ``--flags`` the way fire reads them (``--a b``, ``--a=b``, bare ``--a``)."""
    positional: list[str] = []
    flags: dict[str, str | bool] = {}
    i = 0
    while i < len(rest):
        tok = rest[i]
        if tok.startswith("--"):
            key, eq, value = tok[2:].partition("=")
            if not eq:
                if i + 1 < len(rest) and not rest[i + 1].startswith("--"):
                    value, i = rest[i + 1], i + 1
                else:
                    value = True
            flags[key.replace("-", "_")] = value
        else:
            positional.append(tok)
        i += 1
    return positional, flags


def _check_signature(fn: Any, positional: list[str], flags: dict[str, Any], where: str) -> None:
    params = inspect.signature(fn).parameters
    if any(p.kind == p.VAR_KEYWORD for p in params.values()):
        return
    named = [n for n, p in params.items() if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]
    unknown = sorted(set(flags) - set(named))
    assert not unknown, f"{where}: {fn.__name__} has no flag(s) {unknown}; it takes {named}"
    assert len(positional) <= len(named), f"{where}: too many positional arguments {positional}"


CLI = [c for c in SHELL if _cli_argv(c) is not None]


@pytest.mark.parametrize("cmd", CLI, ids=_ids(CLI))
def test_command_and_flags_exist(cmd: Command) -> None:
    _, fn, rest = _function(_cli_argv(cmd))
    positional, flags = _flags(rest)
    _check_signature(fn, positional, flags, cmd.where)


def test_every_command_answers_help(capsys: pytest.CaptureFixture) -> None:
    """``pocket --help`` lists every command with a line of description; each command answers ``--help``."""
    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    assert exit_info.value.code in (0, None)
    listing = "".join(capsys.readouterr())
    for name, fn in COMMANDS.items():
        assert name in listing
        subs = fn.commands().items() if isinstance(fn, Group) else [(None, fn)]
        for sub, f in subs:
            assert inspect.unwrap(f).__doc__, f"{name} {sub or ''}: no docstring for --help"
            with pytest.raises(SystemExit) as exit_info:
                main([name, *([sub] if sub else []), "--help"])
            assert exit_info.value.code in (0, None)
            assert inspect.unwrap(f).__doc__.strip().splitlines()[0][:40] in "".join(capsys.readouterr())


def test_bad_input_is_one_sentence_and_exit_1(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["lookalike", "no_such_dataset", "--out", str(tmp_path)])
    assert exit_info.value.code == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "no_such_dataset" in err and "nfbs" in err and "\n" not in err
    with pytest.raises(SystemExit) as exit_info:
        main(["datacheck", str(tmp_path / "missing.json"), "--dataset_dir", str(tmp_path)])
    assert exit_info.value.code == 1
    assert "missing.json" in capsys.readouterr().err


def test_the_console_script_is_installed_and_runs() -> None:
    import tomllib

    scripts = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts["pocket"] == "common.__main__:main"
    # the README's set-up installs it beside the interpreter
    pocket = Path(sys.executable).parent / "pocket"
    assert pocket.is_file(), f"{pocket}: not installed (run the README's set-up: bash scripts/test.sh)"
    proc = subprocess.run([str(pocket), "complexity", "--table", "params"], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "| Table I  unet full | 90,486,274 | 90.5M |" in proc.stdout
    proc = subprocess.run([str(pocket), "complexity", "--table", "nope"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1 and proc.stderr.startswith("error: ") and "nope" in proc.stderr


# ----------------------------------------------------------------------------------------- shell lines
def test_every_documented_line_is_a_known_kind() -> None:
    """A new kind of command in the docs must be classified here (and so be checked)."""
    for cmd in SHELL:
        argv = cmd.argv()
        known = (
            _cli_argv(cmd) is not None
            or _monai_argv(cmd) is not None
            or cmd.text.startswith("python -c")
            or cmd.text.startswith(SCRIPTS)
            or argv[0] in NOT_OURS
            or re.match(r"/\S+/bin/", argv[0])  # a tool in a virtual environment (the lock update)
            or argv[0].startswith("--")
            or re.match(r"[A-Z_]+=", argv[0])
        )
        assert known, f"{cmd.where}: unclassified documented command {cmd.text!r}"


def test_scripts_named_in_the_docs_exist() -> None:
    for cmd in SHELL:
        if cmd.text.startswith(SCRIPTS):
            assert (REPO_ROOT / cmd.argv()[1]).is_file(), cmd.where


PYTHON_C = [c for c in SHELL if c.text.startswith("python -c")]
PYTHON_BLOCKS = documented("python")


@pytest.mark.parametrize("cmd", PYTHON_C + PYTHON_BLOCKS, ids=_ids(PYTHON_C + PYTHON_BLOCKS))
def test_python_snippets_compile_and_import_what_they_name(cmd: Command) -> None:
    code = cmd.text
    if code.startswith("python -c"):
        code = shlex.split(code)[2]
    tree = ast.parse(code)
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            module = importlib.import_module(node.module)
            for alias in node.names:
                assert hasattr(module, alias.name), f"{cmd.where}: {node.module} has no {alias.name}"
        elif isinstance(node, ast.Import):
            for alias in node.names:
                importlib.import_module(alias.name)


def test_python_blocks_run() -> None:
    for cmd in PYTHON_BLOCKS:
        exec(compile(cmd.text, cmd.where, "exec"), {})


# ----------------------------------------------------------------------------------------- monai.bundle
def _monai_argv(cmd: Command) -> list[str] | None:
    argv = cmd.argv()
    if argv[:3] == ["python", "-m", "monai.bundle"]:
        return argv[3:]
    if argv[0] == "torchrun":
        i = argv.index("-m")
        assert argv[i + 1] == "monai.bundle", cmd.where
        return argv[i + 2:]
    return None


MONAI = [c for c in SHELL if _monai_argv(c) is not None]


def _bundle_dir(cmd: Command) -> Path:
    assert cmd.bundle, f"{cmd.where}: a monai.bundle command outside a bundle folder ({cmd.cwd!r})"
    return REPO_ROOT / "bundles" / cmd.bundle


def _parse_value(value: Any) -> Any:
    if isinstance(value, str):
        try:
            return ast.literal_eval(value)
        except (ValueError, SyntaxError):
            return value
    return value


def _config_files(flags: dict[str, Any], bundle: Path, where: str) -> list[Path]:
    files = _parse_value(flags["config_file"])
    files = [files] if isinstance(files, str) else list(files)
    paths = [bundle / f for f in files]
    for p in paths:
        assert p.is_file(), f"{where}: {p.relative_to(REPO_ROOT)} does not exist"
    return paths


@pytest.mark.parametrize("cmd", MONAI, ids=_ids(MONAI))
def test_monai_bundle_commands_name_real_files_and_keys(cmd: Command) -> None:
    from monai.bundle import ConfigParser

    positional, flags = _flags(_monai_argv(cmd))
    verb = positional[0]
    bundle = _bundle_dir(cmd)
    for key in ("meta_file", "logging_file"):
        if key in flags:
            assert (bundle / flags[key]).is_file(), f"{cmd.where}: {flags[key]} does not exist"
    if verb == "verify_metadata":
        assert (bundle / flags["filepath"]).is_file(), f"{cmd.where}: schema {flags['filepath']} does not exist"
        return
    parser = ConfigParser()
    parser.read_config([str(p) for p in _config_files(flags, bundle, cmd.where)])
    if verb == "run":
        run_id = positional[1] if len(positional) > 1 else "run"
        assert run_id in parser, f"{cmd.where}: the configs have no {run_id!r}"
        unknown = sorted(k for k in flags if k not in RUN_ARGS and k not in parser)
        assert not unknown, f"{cmd.where}: overrides {unknown} name no key of the configs"
    else:
        assert verb in ("ckpt_export", "verify_net_in_out", "onnx_export"), f"{cmd.where}: {verb}?"
        assert positional[1] in parser, f"{cmd.where}: no {positional[1]!r} in the configs"


def _run_monai(argv: list[str], cwd: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import fire
    from monai.bundle import scripts

    monkeypatch.chdir(cwd)
    monkeypatch.setattr(sys, "argv", ["monai.bundle", *argv])
    fire.Fire({n: getattr(scripts, n) for n in ("ckpt_export", "onnx_export", "verify_metadata", "verify_net_in_out")},
              command=argv)


EXPORTS = ("ckpt_export", "onnx_export")
CHECKS = [c for c in MONAI if _monai_argv(c)[0] in ("verify_metadata", "verify_net_in_out", *EXPORTS)]


@pytest.mark.parametrize("cmd", CHECKS, ids=_ids(CHECKS))
def test_verify_and_export_commands_run(cmd: Command, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """In a copy of the bundle (with the repository's schema beside it), as written."""
    import torch
    from monai.bundle import ConfigParser

    bundle = _bundle_dir(cmd)
    sandbox = tmp_path / "bundles" / bundle.name
    shutil.copytree(bundle / "configs", sandbox / "configs")
    shutil.copytree(REPO_ROOT / "tests" / "bundles", tmp_path / "tests" / "bundles",
                    ignore=shutil.ignore_patterns("*.py", "__pycache__"))
    argv = _monai_argv(cmd)
    positional, flags = _flags(argv)
    if positional[0] in EXPORTS:  # weights made from network_def, as model-zoo CI does
        parser = ConfigParser()
        parser.read_config([str(p) for p in _config_files(flags, sandbox, cmd.where)])
        parser.update({k: _parse_value(v) for k, v in flags.items() if k in parser})
        network = parser.get_parsed_content(positional[1]).eval()
        ckpt = sandbox / flags["ckpt_file"]
        ckpt.parent.mkdir(parents=True, exist_ok=True)
        torch.save(network.state_dict(), ckpt)
    _run_monai(argv, sandbox, monkeypatch)
    if positional[0] == "ckpt_export":
        exported = torch.jit.load(str(sandbox / flags["filepath"]))
        assert sum(p.numel() for p in exported.parameters()) > 0
    if positional[0] == "onnx_export":  # runs in ONNX Runtime on another batch size and shape, as torch does
        import onnxruntime

        shape = list(_parse_value(flags["input_shape"]))
        shape[0] = 2
        shape[2:] = [s * 2 if i == 0 else s for i, s in enumerate(shape[2:])]
        x = torch.randn(*shape)
        session = onnxruntime.InferenceSession(str(sandbox / flags["filepath"]), providers=["CPUExecutionProvider"])
        got = session.run(None, {"image": x.numpy()})[0]
        with torch.no_grad():
            want = network(x).numpy()
        assert got.shape == want.shape and abs(got - want).max() < 1e-3, f"{cmd.where}: ONNX output differs"


# ----------------------------------------------------------------------------------------- option lines
OPTIONS = [c for c in SHELL if c.argv()[0].startswith("--")]


@pytest.mark.parametrize("cmd", OPTIONS, ids=_ids(OPTIONS))
def test_option_lines_name_keys_of_the_train_config(cmd: Command) -> None:
    from monai.bundle import ConfigParser

    parser = ConfigParser()
    parser.read_config(str(_bundle_dir(cmd) / "configs" / "train.json"))
    _, flags = _flags(cmd.argv())
    unknown = sorted(k for k in flags if k not in parser)
    assert not unknown, f"{cmd.where}: {unknown} are no keys of train.json"


# ----------------------------------------------------------------------------------------- running ours
#: Commands that finish in seconds on look-alike data: every documented use of them runs.
RUN = ("lookalike", "datalist", "datacheck", "fingerprint", "complexity", "brats_stack")
#: The look-alike each dataset gets when a command names the real data (``/data/...``, ``$DATA``): as many
#: cases as the committed list holds, so that list is checked unchanged.
LOOKALIKE = {"lits": {"cases": 131, "size": 16}, "brats": {"cases": 369, "size": 16}, "nfbs": {"size": 24},
             "covidx": {"cases": 40, "size": 64}, "prostate": {"size": 24}}
BUNDLE_DATASET = {"nfbs_brain_mri_segmentation": "nfbs", "lits_liver_ct_segmentation": "lits",
                  "brats_tumor_mri_segmentation": "brats", "covidx_cxr_classification": "covidx",
                  "prostate_mri_segmentation": "prostate"}
PLACEHOLDER = re.compile(r"^(/data/|/path/to/|\$)")


def _dataset_of(token: str, cmd: Command, argv: list[str]) -> str:
    for name in ("nfbs", "lits", "brats", "covidx", "prostate"):
        if name in token.lower() or (name == "prostate" and "task05" in token.lower()):
            return name
    if argv[0] in ("datalist", "lookalike") and len(argv) > 1 and argv[1] in LOOKALIKE:
        return argv[1]
    assert cmd.bundle, f"{cmd.where}: which dataset does {token!r} stand for?"
    return BUNDLE_DATASET[cmd.bundle]


class Sandbox:
    """A copy of the repository's bundles, data lists and schema, a /tmp of its own and look-alike data."""

    def __init__(self, root: Path) -> None:
        self.root = root
        for part in ("bundles", "data_lists"):
            shutil.copytree(REPO_ROOT / part, root / part, ignore=shutil.ignore_patterns("models", "eval", "runs"))
        self.data: dict[str, str] = {}
        self.env: dict[str, str] = {}

    def lookalike(self, dataset: str) -> str:
        if dataset not in self.data:
            from common.datasets import write_lookalike

            self.data[dataset] = write_lookalike(dataset, str(self.root / "real" / dataset), **LOOKALIKE[dataset])
        return self.data[dataset]

    def path(self, token: str, cmd: Command, argv: list[str]) -> str:
        token = re.sub(r"\$(\w+)", lambda m: self.env.get(m.group(1), m.group(0)), token)
        if token.startswith("/tmp/"):
            return str(self.root / token.lstrip("/"))
        if PLACEHOLDER.match(token):
            return self.lookalike(_dataset_of(token, cmd, argv))
        return token

    def cwd(self, cmd: Command) -> Path:
        where = self.root / cmd.cwd.lstrip("/")
        where.mkdir(parents=True, exist_ok=True)
        return where


def _placeholder_words(argv: list[str]) -> bool:
    """``pocket lookalike TASK --out DIR``: a pattern for the reader, not a command to run."""
    return any(re.fullmatch(r"[A-Z][A-Z_]+(\.json)?", a) for a in argv)


RUNNABLE_DOCS = sorted({c.doc for c in CLI if not c.inline and _function(_cli_argv(c))[0] in RUN})


@pytest.mark.parametrize("doc", RUNNABLE_DOCS, ids=[str(d.relative_to(REPO_ROOT)) for d in RUNNABLE_DOCS])
def test_documented_commands_run_on_lookalike_data(doc: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                   capsys: pytest.CaptureFixture) -> None:
    """The document's quick commands, in its order, as written (paths mapped into a sandbox)."""
    box = Sandbox(tmp_path)
    ran = 0
    for cmd in (c for c in SHELL if c.doc == doc):
        argv = cmd.argv()
        if argv[0] == "export" or re.match(r"[A-Z_]+=", argv[0]):
            for assignment in argv[1:] if argv[0] == "export" else argv:
                key, _, value = assignment.partition("=")
                box.env[key] = value  # mapped where it is used
            continue
        if cmd.inline:
            continue
        if argv[:2] == ["cp", "-r"]:
            shutil.copytree(box.cwd(cmd) / argv[2], box.path(argv[3], cmd, argv), dirs_exist_ok=True)
            continue
        if cmd.text.startswith("python -c"):
            code = shlex.split(cmd.text)[2].replace("'/tmp/", f"'{box.root}/tmp/")
            monkeypatch.chdir(box.cwd(cmd))
            exec(compile(code, cmd.where, "exec"), {})
            continue
        cli = _cli_argv(cmd)
        if cli is None or _function(cli)[0] not in RUN or _placeholder_words(cli):
            continue
        cli = [box.path(a, cmd, cli) for a in cli]
        monkeypatch.chdir(box.cwd(cmd))
        with pytest.raises(SystemExit) as exit_info:
            main(cli)
            raise SystemExit(0)
        out = capsys.readouterr()
        assert exit_info.value.code in (0, None), f"{cmd.where}: {cmd.text}\n{out.err[-2000:]}"
        ran += 1
    assert ran, f"{doc}: no command ran"
