"""`benchmarks/pretrained_unet.py --quick`: pretrains a plain UNet, runs JDCL from it and from scratch, records both."""

import json
import os
from pathlib import Path

import pytest
from diffusers import UNet2DModel
from safetensors.torch import load_file

from .utils import load_benchmark


MNIST_10K = Path(
    os.environ.get("JDCL_MNIST10K") or Path(__file__).resolve().parents[2] / "shared" / "data" / "mnist-10k"
)


@pytest.mark.skipif(not MNIST_10K.is_dir(), reason=f"mnist-10k not found at {MNIST_10K} (set JDCL_MNIST10K)")
def test_quick_benchmark_starts_jdcl_from_the_pretrained_unet(tmp_path, capsys):
    benchmark = load_benchmark("pretrained_unet")
    results_path = tmp_path / "results.json"
    argv = ["--quick", "--seeds", "0", "--results", str(results_path), "--work_dir", str(tmp_path), "--dataset"]
    benchmark.main([*argv, str(MNIST_10K)])

    results = json.loads(results_path.read_text())
    assert results["pretrain_steps"] == 2 and set(results["rows"]) == {"jdcl_pretrained_unet", "jdcl"}
    for entry in results["rows"].values():
        assert entry["seeds"] == [0] and 0.0 <= entry["average_accuracy"][0] <= 1.0
    # The run started from the saved UNet: its first task's model was built on those weights, and its record says so.
    (budget_dir,) = tmp_path.glob("budget-*")
    unet = UNet2DModel.from_pretrained(budget_dir / "pretrained-unet-2")
    run_config = json.loads((budget_dir / "jdcl_pretrained_unet-seed0" / "run_config.json").read_text())
    assert run_config["identity"]["pretrained_unet"] == str(budget_dir / "pretrained-unet-2")
    assert unet.config.sample_size == results["budget"]["resolution"]
    task_1 = load_file(
        budget_dir / "jdcl_pretrained_unet-seed0" / "task-1" / "unet" / "diffusion_pytorch_model.safetensors"
    )
    assert set(unet.state_dict()) < set(task_1)
    assert "| pretrained UNet (this benchmark) | [0] |" in capsys.readouterr().out
