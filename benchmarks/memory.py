"""Peak resident memory of a short jdcl run against the number of training images.

Each size runs in a fresh process (peak RSS only grows): mnist-10k's training split as it is, the same images
repeated to 60,000 (MNIST's size) and to 240,000. The budget is tiny (a few steps per stage): what grows with the
data set is the decoded uint8 images and their labels; the model's share is the same at every size. The bytes per
image are the least-squares slope of peak RSS over the sizes (at 16x16x1 the pixels alone are 256 bytes an image, so
the largest size is there to lift the slope out of the run-to-run noise of the peak, a few MiB).

    python benchmarks/memory.py                       # 8,000, 60,000 and 240,000 images
    python benchmarks/memory.py --sizes 8000,20000 --results /tmp/memory.json

Results: `benchmarks/results/memory_mnist10k.json`.
"""

import argparse
import datetime
import json
import os
import resource
import subprocess
import sys
import tempfile
from pathlib import Path


sys.path.insert(0, str(Path(__file__).resolve().parent))
from continual import default_dataset_path  # noqa: E402
from machine import machine_summary  # noqa: E402


DEFAULT_RESULTS = Path(__file__).resolve().parent / "results" / "memory_mnist10k.json"
BUDGET = {
    "resolution": 16,
    "num_tasks": 5,
    "local_train_steps": 2,
    "global_train_steps": 2,
    "replay_samples_per_class": 4,
    "replay_inference_steps": 2,
    "grid_samples_per_class": 0,
    "logger": "none",
    "show_progress": False,
}


def peak_rss_bytes() -> int:
    # Linux reports ru_maxrss in KiB.
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def measure(num_images: int, dataset_path: Path) -> dict:
    """Runs jdcl on `num_images` training images in this process; returns its peak RSS before and after."""
    import datasets
    import torch

    from jdcl.config import JDCLTrainingConfig
    from jdcl.data import ClassificationData, load_classification_dataset
    from jdcl.trainer import train_jdcl

    torch.set_num_threads(1)
    data = load_classification_dataset(dataset_name=str(dataset_path))
    repeats = -(-num_images // len(data.train))
    train = datasets.concatenate_datasets([data.train] * repeats).select(range(num_images))
    data = ClassificationData(train, data.test, data.image_column, data.label_column, data.class_names)
    before = peak_rss_bytes()
    with tempfile.TemporaryDirectory() as work_dir:
        config = JDCLTrainingConfig(
            **BUDGET, output_dir=os.path.join(work_dir, "run"), cache_dir=os.path.join(work_dir, "cache")
        )
        train_jdcl(config, data=data)
    return {"images": num_images, "peak_rss_bytes_before_run": before, "peak_rss_bytes": peak_rss_bytes()}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="8000,60000,240000", help="Comma-separated numbers of training images.")
    parser.add_argument("--dataset", type=Path, default=default_dataset_path(), help="The mnist-10k folder.")
    parser.add_argument("--results", type=Path, default=DEFAULT_RESULTS)
    parser.add_argument("--child", type=int, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child is not None:
        print(json.dumps(measure(args.child, args.dataset)))
        return

    rows = []
    for size in sorted(int(size) for size in args.sizes.split(",")):
        command = [sys.executable, __file__, "--child", str(size), "--dataset", str(args.dataset)]
        completed = subprocess.run(command, check=True, capture_output=True, text=True)
        row = json.loads(completed.stdout.strip().splitlines()[-1])
        rows.append(row)
        print(f"{row['images']:6d} images: peak RSS {row['peak_rss_bytes'] / 2**20:.0f} MiB", flush=True)
    bytes_per_image = None
    if len(rows) > 1:
        sizes = [row["images"] for row in rows]
        peaks = [row["peak_rss_bytes"] for row in rows]
        mean_size, mean_peak = sum(sizes) / len(sizes), sum(peaks) / len(peaks)
        bytes_per_image = sum((n - mean_size) * (m - mean_peak) for n, m in zip(sizes, peaks)) / sum(
            (n - mean_size) ** 2 for n in sizes
        )
        print(f"{bytes_per_image:.0f} bytes of peak RSS per training image (the 16x16x1 uint8 pixels are 256)")
    results = {
        "dataset": "mnist-10k",
        "budget": BUDGET,
        "rows": rows,
        "bytes_per_image": bytes_per_image,
        "machine": machine_summary(),
        "date": datetime.date.today().isoformat(),
        "command": "python benchmarks/memory.py --sizes " + args.sizes,
    }
    args.results.parent.mkdir(parents=True, exist_ok=True)
    args.results.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
