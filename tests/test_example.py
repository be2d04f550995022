"""The README's main job (examples/digits.py) runs and trains something useful."""

import importlib.util
from pathlib import Path

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "digits.py"


def test_digits_example_improves_map_at_r(capsys):
    spec = importlib.util.spec_from_file_location("digits_example", EXAMPLE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    result = module.main(epochs=5)
    out = capsys.readouterr().out
    assert "MAP@R" in out
    assert result["trained_map@r"] > result["raw_map@r"]
