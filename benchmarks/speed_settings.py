# ruff: noqa: E402
"""What does each speed setting buy? `stage_speed.py` of one preset under the plain path and under each setting
(`--adam_fused`, `--channels_last`, `--compile`, all of them), interleaved over rounds so that every setting sees the
same machine, each in its own process (accelerate keeps one dynamo setting per process). Reports the median local
step, global step and sampling speed of each setting and its ratio to the plain path, and the wall time of each
process: inductor's cache lives in a fresh folder per invocation, so the first round of a compiled setting pays the
compilation that a user's first run pays, and later rounds find it cached.

    python benchmarks/speed_settings.py                       # the demo on the CPU: results/speed_settings_demo_cpu.json
    python benchmarks/speed_settings.py --rounds 1 --steps 1 --settings plain adam_fused   # a check that it runs
    python benchmarks/speed_settings.py --device cuda --mixed_precision bf16 \\
        --preset examples/configs/cifar10.yaml --output benchmarks/results/speed_settings_cifar10_cuda.json
"""

import os


os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import argparse
import datetime
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any


sys.path.insert(0, str(Path(__file__).resolve().parent))
from machine import machine_description


HERE = Path(__file__).resolve().parent
SETTINGS = {
    "plain": [],
    "adam_fused": ["--adam_fused"],
    "channels_last": ["--channels_last"],
    "compile": ["--compile"],
    "all": ["--adam_fused", "--channels_last", "--compile"],
}
FIGURES = {
    "local_ms": lambda report: report["local_step"]["seconds_per_step"] * 1e3,
    "global_ms": lambda report: report["global_step"]["seconds_per_step"] * 1e3,
    "sampling_images_per_second": lambda report: report["rehearsal_sampling"]["images_per_second"],
    "local_fraction_of_peak": lambda report: report["local_step"]["fraction_of_peak"],
}


def summarize(runs: dict[str, list[dict]]) -> dict[str, dict]:
    r"""
    The median of each figure over a setting's rounds, and its ratio to the plain path's median (speed-up: above 1 is
    faster, for step times and for images/s alike).

    Args:
        runs (`dict[str, list[dict]]`): Each setting's rounds, each with the `FIGURES` and `process_seconds`.
    """
    medians = {
        setting: {
            name: statistics.median(values) if None not in values else None
            for name in (*FIGURES, "process_seconds")
            for values in [[run[name] for run in rounds]]
        }
        for setting, rounds in runs.items()
        if rounds
    }
    plain = medians.get("plain")
    for figures in medians.values() if plain is not None else ():
        figures["local_speedup"] = plain["local_ms"] / figures["local_ms"]
        figures["global_speedup"] = plain["global_ms"] / figures["global_ms"]
        figures["sampling_speedup"] = figures["sampling_images_per_second"] / plain["sampling_images_per_second"]
    return medians


def run_setting(setting: str, stage_speed_args: list[str], cache_dir: Path, timeout: int) -> dict | None:
    """One `stage_speed.py` process under `setting`: its figures and wall time, or `None` if it failed."""
    with tempfile.TemporaryDirectory() as folder:
        output = Path(folder) / "report.json"
        command = [sys.executable, str(HERE / "stage_speed.py"), *stage_speed_args, *SETTINGS[setting]]
        environment = {**os.environ, "TORCHINDUCTOR_CACHE_DIR": str(cache_dir)}
        start = time.perf_counter()
        try:
            subprocess.run(
                [*command, "--output", str(output)], env=environment, check=True, timeout=timeout, capture_output=True
            )
        except (subprocess.CalledProcessError, subprocess.TimeoutExpired) as error:
            stderr = getattr(error, "stderr", b"") or b""
            print(f"  {setting}: failed ({type(error).__name__}): {stderr.decode()[-2000:]}", file=sys.stderr)
            return None
        report = json.loads(output.read_text())
    return {"process_seconds": time.perf_counter() - start, **{name: get(report) for name, get in FIGURES.items()}}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--settings", nargs="+", choices=list(SETTINGS), default=list(SETTINGS))
    parser.add_argument("--rounds", type=int, default=3, help="Measurements of each setting, interleaved.")
    parser.add_argument("--preset", default=None, help="A YAML preset; the demo if none.")
    parser.add_argument("--num_classes", type=int, default=10)
    parser.add_argument("--num_channels", type=int, default=None)
    parser.add_argument("--train_batch_size", type=int, default=None)
    parser.add_argument("--mixed_precision", choices=("no", "bf16", "fp16"), default="no")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--sampling_steps", type=int, default=10)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--timeout", type=int, default=1200, help="Seconds one stage_speed.py process may take.")
    parser.add_argument(
        "--output", type=Path, default=HERE / "results" / "speed_settings_demo_cpu.json", help="Results (JSON)."
    )
    args = parser.parse_args(argv)
    stage_speed_args = [
        "--device", args.device, "--mixed_precision", args.mixed_precision, "--warmup", str(args.warmup),
        "--steps", str(args.steps), "--sampling_steps", str(args.sampling_steps), "--num_classes", str(args.num_classes),
    ]  # fmt: skip
    for flag in ("preset", "num_channels", "train_batch_size", "threads"):
        if getattr(args, flag) is not None:
            stage_speed_args += [f"--{flag}", str(getattr(args, flag))]

    report = {
        "benchmark": "jdcl speed settings",
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "machine": {**machine_description(), "device": args.device, "load_average_at_start": os.getloadavg()},
        "stage_speed_arguments": stage_speed_args,
        "runs": {setting: [] for setting in args.settings},
    }
    with tempfile.TemporaryDirectory() as cache_dir:
        for round_index in range(args.rounds):
            for setting in args.settings:
                run = run_setting(setting, stage_speed_args, Path(cache_dir), args.timeout)
                if run is None:
                    continue
                report["runs"][setting].append(run)
                print(
                    f"round {round_index + 1} {setting}: local {run['local_ms']:.1f} ms, global "
                    f"{run['global_ms']:.1f} ms, sampling {run['sampling_images_per_second']:.1f} img/s, process "
                    f"{run['process_seconds']:.0f} s",
                    flush=True,
                )
                report["medians"] = summarize(report["runs"])
                report["load_average_at_end"] = os.getloadavg()
                args.output.parent.mkdir(parents=True, exist_ok=True)
                temporary = args.output.with_suffix(".tmp")
                temporary.write_text(json.dumps(report, indent=2) + "\n")
                temporary.replace(args.output)
    print(f"medians over {args.rounds} rounds ({args.device}, {args.mixed_precision}):")
    for setting, figures in report.get("medians", {}).items():
        speedups = (
            f" (x{figures['local_speedup']:.2f}, x{figures['global_speedup']:.2f}, x{figures['sampling_speedup']:.2f})"
            if "local_speedup" in figures
            else ""
        )
        print(
            f"  {setting}: local {figures['local_ms']:.1f} ms, global {figures['global_ms']:.1f} ms, sampling "
            f"{figures['sampling_images_per_second']:.1f} img/s{speedups}"
        )
    print(f"saved {args.output}")
    return report


if __name__ == "__main__":
    main()
