"""Runs a benchmark's pieces in one-thread worker processes, each taking every n-th piece."""

import json
import os
import subprocess
import sys
from pathlib import Path


def run_in_workers(script: str | Path, argv: list[str], pieces: list, workers: int) -> None:
    r"""
    Starts `workers` processes of `script ARGV --pairs JSON`, the k-th handed `pieces[k::workers]`, and waits for all.
    Each worker records its finished pieces itself (under the benchmark's results lock), so a failed or killed worker
    loses only the piece it was on, and a rerun continues it.

    Args:
        script (`str` or `Path`): The benchmark's file; it must accept `--pairs` (a JSON list of its pieces).
        argv (`list[str]`): The arguments every worker gets (results file, run folders, `--quick`).
        pieces (`list`): What to run, JSON-serialisable.
        workers (`int`): Processes at once.
    """
    environment = {**os.environ, "OMP_NUM_THREADS": "1"}
    processes = [
        subprocess.Popen(
            [sys.executable, str(script), *argv, "--pairs", json.dumps(pieces[worker::workers])], env=environment
        )
        for worker in range(min(workers, len(pieces)))
    ]
    if any(process.wait() != 0 for process in processes):
        raise SystemExit("A worker failed; rerun to continue where it stopped.")
