"""The pairloss command."""

import subprocess
import sys

import pytest

from pairloss.catalogue import LOSSES, find
from pairloss.cli import main
from pairloss.errors import PairLossError


def test_losses_lists_every_catalogue_entry(capsys):
    assert main(["losses"]) == 0
    out = capsys.readouterr().out
    for entry in LOSSES:
        assert entry.name in out and entry.paper in out


def test_every_catalogue_entry_loads():
    for entry in LOSSES:
        cls = entry.load()
        assert cls.__doc__ and len(cls.__doc__) > 100


def test_unknown_loss_suggests_close_names():
    with pytest.raises(PairLossError, match="did you mean multi_similarity"):
        find("multisim")


def test_loss_names_match_catalogue_class_and_spelling_variants():
    for name in ("multi_similarity", "MultiSimilarityLoss", "Multi-Similarity", "ms"):
        assert find(name).name == "multi_similarity"


def test_console_script_runs():
    out = subprocess.run(
        [sys.executable, "-m", "pairloss.cli", "losses", "--family", "triplet"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert "triplet_margin" in out and "multi_similarity" not in out


def test_bench_subcommand_passes_its_options_to_the_benchmark(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["bench", "--family", "proxy", "--help"])
    assert exit_info.value.code == 0
    assert "--family" in capsys.readouterr().out
