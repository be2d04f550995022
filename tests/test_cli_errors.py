"""Every error path of the ``pairloss`` command ends in one line ``pairloss: error: ...`` and
exit status 2, never a traceback.

The cases are generated from the parser itself: every option of every command gets hostile
values chosen by its type (integers, finite reals, choices, names and paths), so a flag added
later is covered (a string flag without hostile values listed here fails the coverage test).
Then the settings files (TOML), run folders (``eval``, ``--resume``) and loss specs.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
from pathlib import Path

import pytest
import torch

from pairloss.cli import build_parser, main

SRC = Path(__file__).resolve().parents[1] / "src"
TINY_RUN = ["--epochs", "1", "--batches-per-epoch", "1", "-P", "3", "-K", "3", "--quiet"]
TINY_RUN += ["--embedding-size", "4", "--threads", "1"]

INTEGER_HOSTILE = ["abc", "1.5", "-1", "", "1e3", "9" * 30]
REAL_HOSTILE = ["nan", "inf", "-inf", "abc", "-1", "1e999", ""]
NAMES_HOSTILE = {
    "dataset": ["nope", "", "fashion"],
    "loss": ["nope", "", "multisim"],
    "miner": ["nope", "", "batch-hardest"],
    "model": ["nope", "", "torchvision:"],
    "family": ["nope"],
    "protocol": ["nope", ""],
    "augment": ["blur", "", "flip,flip", "flip"],  # flip: digits are vectors, not images
    "device": ["tpu", "", "cuda:99"],
    "pretrained": ["default", "{tmp}/absent.pth"],  # the default model is not torchvision's
}
PATHS_HOSTILE = {  # {tmp}: a scratch folder, {file}: an existing file, {dir}: a folder
    "data_dir": ["{tmp}/absent", ""],
    "labels": ["{tmp}/absent.txt", "{dir}"],
    "config": ["{tmp}/absent.toml", "{dir}", "{file}"],
    "out": ["{file}", ""],
    "json": ["{tmp}/absent/x.json"],
    "input": ["{tmp}/absent.png", "{dir}", "{file}"],
    "gallery": ["{tmp}/absent", "{file}"],
}
COMMAND_HOSTILE = {  # where a command reads a flag differently
    ("embed", "out"): ["", "{tmp}/absent/x", "{dir}/"],
    ("embed", "dataset"): ["nope", "", "att-faces"],
    ("embed", "data_dir"): ["{tmp}/absent", ""],
}
SIZE_HOSTILE = ["0", "abc", "10x", "-3", "99999", "8x0"]
BYTES_HOSTILE = ["abc", "-1", "1", "1.5X", ""]
NOT_VALIDATED_HERE = {
    "help",
    "quiet",
    "resume",
    "option",
    "losses",
    "path",
    "command",
    "json_",
    "amp",
    "faiss",
    "backbone",
    "run",
}


def _commands() -> dict[str, argparse.ArgumentParser]:
    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return {name: p for name, p in sub.choices.items() if name != "bench"}


def _base(command: str, tmp: Path, run: Path) -> list[str]:
    if command in ("train", "compare"):
        extra = ["--losses", "ms"] if command == "compare" else []
        return [command, "--dataset", "digits", *TINY_RUN, "--out", str(tmp / "run"), *extra]
    if command == "eval":
        return [command, str(tmp / "emb.pt")]
    if command == "embed":
        return [command, str(run), "--out", str(tmp / "emb")]
    if command == "search":
        return [command, str(run), "--gallery", str(run / "gallery"), "--input", str(run / "q.npy")]
    return [command]


def _hostile(command: str, action: argparse.Action) -> list[str]:
    kind = getattr(action.type, "__name__", None)
    if action.choices is not None:
        return ["nope", ""]
    if kind in ("_integer", "_count", "_positive"):
        return INTEGER_HOSTILE
    if kind == "_real":
        return REAL_HOSTILE
    if kind == "_size":
        return SIZE_HOSTILE
    if kind == "_bytes":
        return BYTES_HOSTILE
    if (command, action.dest) in COMMAND_HOSTILE:
        return COMMAND_HOSTILE[(command, action.dest)]
    return NAMES_HOSTILE.get(action.dest, []) + PATHS_HOSTILE.get(action.dest, [])


def _option_cases():
    cases = []
    for command, parser in _commands().items():
        for action in parser._actions:
            if not action.option_strings or action.dest in NOT_VALIDATED_HERE:
                continue
            for value in _hostile(command, action):
                cases.append((command, action.option_strings[-1], value))
    return cases


OPTION_CASES = _option_cases()


def _fill(text: str, tmp: Path) -> str:
    return text.format(tmp=tmp, file=tmp / "a_file.txt", dir=tmp / "a_folder")


@pytest.fixture
def scratch(tmp_path: Path) -> Path:
    (tmp_path / "a_file.txt").write_text("not a folder\n")
    (tmp_path / "a_folder").mkdir()
    torch.save(
        {"embeddings": torch.randn(12, 3), "labels": torch.arange(12) % 3}, tmp_path / "emb.pt"
    )
    return tmp_path


def run_cli(argv: list[str], capsys) -> tuple[int, str]:
    """(exit status, stderr) of ``pairloss argv`` run in this process."""
    try:
        status = main(argv)
    except SystemExit as exc:  # argparse's own exit
        status = exc.code
    return status, capsys.readouterr().err


def assert_one_line_error(status: int, err: str, argv: list[str]) -> None:
    lines = err.strip().splitlines()
    assert status == 2, f"{argv}: exit status {status}, stderr {err!r}"
    assert len(lines) == 1 and lines[0].startswith("pairloss: error: "), f"{argv}: {err!r}"
    assert "Traceback" not in err


def test_every_string_option_has_hostile_values():
    for command, parser in _commands().items():
        for action in parser._actions:
            if action.option_strings and action.dest not in NOT_VALIDATED_HERE:
                assert _hostile(command, action), f"{command} {action.option_strings}: no values"


@pytest.mark.parametrize(
    ("command", "flag", "value"), OPTION_CASES, ids=[f"{c} {f}={v!r}" for c, f, v in OPTION_CASES]
)
def test_hostile_option_value_is_one_error_line(
    scratch, finished_run, capsys, command, flag, value
):
    argv = [*_base(command, scratch, finished_run), flag, _fill(value, scratch)]
    assert_one_line_error(*run_cli(argv, capsys), argv)


LOSS_OPTION_CASES = [
    "alpha=abc",
    "alpha=[1,2]",
    "miner=3",
    "reduction=none",
    "reduction=None",
    "nosuch=1",
    "=3",
    "alpha",
    "alpha=" + "(" * 200,
]


@pytest.mark.parametrize("option", LOSS_OPTION_CASES)
def test_hostile_loss_option_is_one_error_line(scratch, capsys, option):
    argv = [*_base("train", scratch, scratch), "-o", option]
    assert_one_line_error(*run_cli(argv, capsys), argv)


@pytest.mark.parametrize(
    "spec", [":", "nope", "ms:alpha=abc", "ms:miner=3", "ms:miner=nope", "ms:=3", "ms:alpha"]
)
def test_hostile_compare_spec_is_one_error_line(scratch, capsys, spec):
    argv = [
        "compare",
        "--dataset",
        "digits",
        *TINY_RUN,
        "--out",
        str(scratch / "c"),
        "--losses",
        spec,
    ]
    assert_one_line_error(*run_cli(argv, capsys), argv)


TOML_CASES = {
    "wrong int type": 'dataset = "digits"\nepochs = "three"\n',
    "float for int": 'dataset = "digits"\nepochs = 2.5\n',
    "bool for int": 'dataset = "digits"\nseed = true\n',
    "number for dataset": "dataset = 3\n",
    "number for out": 'dataset = "digits"\nout = 5\n',
    "empty loss": 'dataset = "digits"\nloss = ""\n',
    "options not a table": 'dataset = "digits"\nloss_options = 3\n',
    "bad option value": 'dataset = "digits"\n[loss_options]\nalpha = "x"\n',
    "inf lr": 'dataset = "digits"\nlr = inf\n',
    "nan clip": 'dataset = "digits"\ngrad_clip = nan\n',
    "unknown key": 'dataset = "digits"\nepochz = 3\n',
    "not toml": "epochs = [\n",
    "not utf-8": b"\xff\xfe\x00",
    "list for miner": 'dataset = "digits"\nminer = ["a"]\n',
}


@pytest.mark.parametrize("case", TOML_CASES, ids=list(TOML_CASES))
def test_hostile_config_file_is_one_error_line(scratch, capsys, monkeypatch, case):
    monkeypatch.chdir(scratch)  # the file names no run folder: the default is under scratch
    path = scratch / "run.toml"
    content = TOML_CASES[case]
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    argv = ["train", "--config", str(path), "--quiet"]
    assert_one_line_error(*run_cli(argv, capsys), argv)


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory) -> Path:
    """A tiny finished run, with an embedded gallery and a query file for ``search``."""
    import numpy as np

    out = tmp_path_factory.mktemp("finished") / "run"
    status = main(["train", "--dataset", "digits", *TINY_RUN, "--out", str(out)])
    assert status == 0
    assert main(["embed", str(out), "--out", str(out / "gallery")]) == 0
    np.save(out / "q.npy", np.zeros((2, 64), np.float32))
    return out


def _copy(run: Path, tmp: Path) -> Path:
    return Path(shutil.copytree(run, tmp / "copy"))


RUN_DAMAGES = {
    "corrupt metrics.jsonl": ("metrics.jsonl", b'{"epoch": 1\n'),
    "metrics line not an object": ("metrics.jsonl", b"[1, 2]\n"),
    "metrics not utf-8": ("metrics.jsonl", b"\xff\xfe\n"),
    "corrupt checkpoint": ("checkpoint.pt", b"not a checkpoint"),
    "corrupt config.json": ("config.json", b"{bad json"),
    "config.json a list": ("config.json", b"[1, 2]"),
    "config.json unknown key": ("config.json", b'{"dataset": "digits", "epochz": 1}'),
    "config.json wrong type": ("config.json", b'{"dataset": "digits", "epochs": "x"}'),
}


@pytest.mark.parametrize("damage", RUN_DAMAGES, ids=list(RUN_DAMAGES))
def test_resume_of_a_damaged_run_is_one_error_line(finished_run, tmp_path, capsys, damage):
    run = _copy(finished_run, tmp_path)
    name, content = RUN_DAMAGES[damage]
    (run / name).write_bytes(content)
    argv = ["train", "--dataset", "digits", *TINY_RUN, "--out", str(run), "--resume"]
    assert_one_line_error(*run_cli(argv, capsys), argv)


MODEL_DAMAGES = {
    **{d: v for d, v in RUN_DAMAGES.items() if "config" in d},
    "corrupt model.pt": ("model.pt", b"not a model"),
    "model.pt without its description": ("model.pt", None),
}


@pytest.mark.parametrize("command", ["eval", "embed", "search"])
@pytest.mark.parametrize("damage", MODEL_DAMAGES, ids=list(MODEL_DAMAGES))
def test_use_of_a_damaged_run_is_one_error_line(finished_run, tmp_path, capsys, damage, command):
    run = _copy(finished_run, tmp_path)
    name, content = MODEL_DAMAGES[damage]
    if content is None:
        torch.save({"model": {}}, run / name)
    else:
        (run / name).write_bytes(content)
    argv = _base(command, tmp_path, run)
    assert_one_line_error(*run_cli(argv, capsys), argv)


@pytest.mark.parametrize(
    "change",
    [["--embedding-size", "8"], ["--loss", "contrastive"], ["--miner", "batch_hard"], ["-K", "4"]],
)
def test_resume_with_other_settings_is_one_error_line(finished_run, tmp_path, capsys, change):
    run = _copy(finished_run, tmp_path)
    argv = ["train", "--dataset", "digits", *TINY_RUN, "--out", str(run), "--resume", *change]
    assert_one_line_error(*run_cli(argv, capsys), argv)


def test_resume_without_a_checkpoint_is_one_error_line(scratch, capsys):
    argv = [*_base("train", scratch, scratch), "--resume"]
    assert_one_line_error(*run_cli(argv, capsys), argv)


@pytest.mark.parametrize(
    "target", ["{tmp}/absent", "{file}", "{dir}", "{tmp}/emb.npy", "{tmp}/emb.h5"]
)
def test_eval_of_a_bad_path_is_one_error_line(scratch, capsys, target):
    """Also: eval's flags for embedding files refused for run folders and the other way round."""
    import numpy as np

    np.save(scratch / "emb.npy", np.zeros((4, 2), np.float32))
    (scratch / "emb.h5").write_bytes(b"")
    argv = ["eval", _fill(target, scratch)]
    assert_one_line_error(*run_cli(argv, capsys), argv)


@pytest.mark.parametrize(
    "flags", [["--labels", "{file}"], ["--protocol", "face"]], ids=["labels", "protocol"]
)
def test_eval_of_a_run_refuses_file_flags(finished_run, scratch, capsys, flags):
    argv = ["eval", str(finished_run), *[_fill(f, scratch) for f in flags]]
    assert_one_line_error(*run_cli(argv, capsys), argv)


def test_option_miner_is_the_string_name_and_reduction_none_is_a_string(scratch):
    from pairloss.cli import _config

    base = _base("train", scratch, scratch)
    args = build_parser().parse_args([*base, "-o", "miner=batch_hard"])
    assert _config(args).miner == "batch_hard" and "miner" not in _config(args).loss_options
    args = build_parser().parse_args([*base, "-o", "reduction=none"])
    assert _config(args).loss_options == {"reduction": "none"}


def test_the_console_script_prints_one_line_and_exits_2(tmp_path):
    script = shutil.which("pairloss")
    assert script is not None, "the pairloss console script is not installed (pip install -e .)"
    env = {**os.environ, "PYTHONPATH": f"{SRC}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    argv = ["train", "--dataset", "digits", "--data-dir", "/nonexistent/pairloss-data"]
    done = subprocess.run(
        [script, *argv, "--out", str(tmp_path / "run")],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert lines == ["pairloss: error: data_dir: /nonexistent/pairloss-data does not exist"]
    assert not (tmp_path / "run").exists()  # refused before anything was written
