"""The README's demo, measured: JDCL and the finetune lower bound on the bundled digits with the default budget.

    python benchmarks/demo.py                       # both strategies, seed 0
    python benchmarks/demo.py --strategies jdcl --seeds 0,1

Each (strategy, seed) runs `examples/train_jdcl.py`'s library path with no flags but the strategy, seed and output
folder, and its final average accuracy and wall time are saved to `benchmarks/results/demo_digits.json` as soon as it
finishes; a rerun skips what is recorded.
"""

import os


# Before torch loads OpenMP: busy-waiting threads slow shared-core CPU steps up to 50x (see src/jdcl/__init__.py).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import argparse  # noqa: E402
import datetime  # noqa: E402
import json  # noqa: E402
import shutil  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import torch  # noqa: E402

from jdcl.atomic import write_json  # noqa: E402
from jdcl.config import JDCLTrainingConfig  # noqa: E402
from jdcl.trainer import train_jdcl  # noqa: E402
from machine import machine_description  # noqa: E402  (benchmarks/ is on the path when run as a script)


HERE = Path(__file__).resolve().parent


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--strategies", default="jdcl,finetune", help="Comma-separated strategies.")
    parser.add_argument("--seeds", default="0", help="Comma-separated seeds.")
    parser.add_argument("--results", default=str(HERE / "results" / "demo_digits.json"))
    parser.add_argument("--work_dir", default=str(HERE / "runs" / "demo"))
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch CPU threads, as the README's `accelerate launch --cpu --num_cpu_threads_per_process 1` gives.",
    )
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)

    results_path = Path(args.results)
    results = json.loads(results_path.read_text()) if results_path.exists() else {}
    budget = JDCLTrainingConfig().run_identity()
    if results.get("budget", budget) != budget:
        raise ValueError(f"{results_path} holds results of other defaults; pass another --results.")
    results.update({"dataset": "bundled digits (scikit-learn load_digits)", "budget": budget})
    results.setdefault("runs", {})

    for strategy in args.strategies.split(","):
        for seed in [int(seed) for seed in args.seeds.split(",")]:
            key = f"{strategy}/seed-{seed}"
            if key in results["runs"]:
                print(f"{key}: recorded, skipped")
                continue
            output_dir = Path(args.work_dir) / key
            shutil.rmtree(output_dir, ignore_errors=True)
            start = time.time()
            metrics = train_jdcl(
                JDCLTrainingConfig(output_dir=str(output_dir), strategy=strategy, seed=seed, show_progress=False)
            )
            results["runs"][key] = {
                "average_accuracy": metrics["average_accuracy"],
                "forgetting": metrics["forgetting"],
                "accuracy_matrix": metrics["accuracy_matrix"],
                "wall_seconds": time.time() - start,
                "machine": machine_description(),
                "date": datetime.date.today().isoformat(),
            }
            write_json(results, results_path)
            print(f"{key}: average accuracy {metrics['average_accuracy']:.4f} in {time.time() - start:.0f} s")
    return results


if __name__ == "__main__":
    main()
