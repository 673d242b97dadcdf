"""Behaviour kept: every strategy and ablation gives the accuracies and weights recorded before the trainer's redesign.

`reference/reference_runs.json` was written by `reference/reference_runs.py` with the trainer as it was before it was
split into strategies, a stage runner, objectives and a rehearsal module. The same short runs (two seeds, three tasks,
a few steps per stage, on the bundled digits) must give the same accuracy matrices and bit-identical weights of every
task. A change of behaviour that is meant must record the file again and say so in its commit.
"""

import json
import platform
import subprocess
import sys
from pathlib import Path

import pytest


REFERENCE_DIR = Path(__file__).resolve().parent / "reference"


@pytest.mark.skipif(platform.machine() not in ("x86_64", "AMD64"), reason="the reference was recorded on x86-64")
def test_every_strategy_gives_the_recorded_accuracies_and_weights(tmp_path):
    recorded = json.loads((REFERENCE_DIR / "reference_runs.json").read_text())
    output = tmp_path / "runs.json"
    subprocess.run(
        [sys.executable, str(REFERENCE_DIR / "reference_runs.py"), "--output", str(output)], check=True, timeout=1200
    )
    results = json.loads(output.read_text())
    assert sorted(results) == sorted(recorded)
    for name, expected in recorded.items():
        actual = results[name]
        assert actual["accuracy_matrix"] == expected["accuracy_matrix"], name
        assert actual["accuracy_seen"] == expected["accuracy_seen"], name
        assert actual["rehearsal"] == expected["rehearsal"], name
        assert actual["weights_sha256"] == expected["weights_sha256"], name
