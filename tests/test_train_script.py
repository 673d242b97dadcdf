"""The training script as users run it: its flags, a SIGKILL and `--resume_from_checkpoint latest`, and two processes
through `accelerate launch`."""

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import yaml

from jdcl.cli import parse_config
from jdcl.config import DEFAULT_UNET_CONFIG, JDCLTrainingConfig

from .utils import TINY_UNET


REPO_ROOT = Path(__file__).resolve().parents[1]
SCRIPT = REPO_ROOT / "examples" / "train_jdcl.py"


TINY_FLAGS = [
    "--resolution", "8",
    "--num_tasks", "2",
    "--class_order", "0,1,2,3",
    "--unet_config", json.dumps(TINY_UNET),
    "--train_batch_size", "16",
    "--replay_samples_per_class", "4",
    "--replay_inference_steps", "2",
    "--grid_inference_steps", "2",
    "--grid_samples_per_class", "2",
    "--logger", "none",
    "--no-show_progress",
]  # fmt: skip


def script_env(threads: int = 1) -> dict:
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", OMP_NUM_THREADS=str(threads))
    env["PYTHONPATH"] = os.pathsep.join([str(REPO_ROOT / "src"), env.get("PYTHONPATH", "")])
    return env


# ---------------------------------------------------------------------------------------------------- the flags


def test_flags_build_the_config(tmp_path):
    config = parse_config(["--output_dir", str(tmp_path), *TINY_FLAGS, "--no-use_ema", "--strategy", "single_stage"])
    assert config.output_dir == str(tmp_path)
    assert config.resolution == 8 and config.num_tasks == 2
    assert [int(c) for c in config.class_order] == [0, 1, 2, 3]
    assert config.unet_config == {**DEFAULT_UNET_CONFIG, **TINY_UNET}  # merged into the default UNet
    assert config.use_ema is False and config.strategy == "single_stage" and config.show_progress is False
    assert config.logger == "none"


def test_flags_win_over_the_config_file(tmp_path):
    path = tmp_path / "preset.yaml"
    path.write_text(yaml.safe_dump({"num_tasks": 3, "resolution": 8, "seed": 5}))
    config = parse_config(["--config", str(path), "--num_tasks", "2"])
    assert (config.num_tasks, config.resolution, config.seed) == (2, 8, 5)
    assert config.local_train_steps == JDCLTrainingConfig().local_train_steps


def test_unknown_config_file_key_is_named(tmp_path):
    path = tmp_path / "preset.yaml"
    path.write_text(yaml.safe_dump({"num_tasks": 2, "learning_rat": 0.1}))
    with pytest.raises(ValueError, match="learning_rat"):
        parse_config(["--config", str(path)])
    with pytest.raises(ValueError, match="learning_rat"):
        JDCLTrainingConfig.from_file(path)


def test_unknown_flag_exits(capsys):
    with pytest.raises(SystemExit) as error:
        parse_config(["--num_tasks", "2", "--lerning_rate", "0.1"])
    assert error.value.code != 0
    assert "--lerning_rate" in capsys.readouterr().err


# ------------------------------------------------------------------------------------------ SIGKILL and resume


def test_sigkill_then_resume_latest(tmp_path):
    output_dir = tmp_path / "run"
    command = [
        sys.executable, str(SCRIPT),
        "--output_dir", str(output_dir),
        *TINY_FLAGS,
        "--local_train_steps", "20",
        "--global_train_steps", "20",
        "--checkpointing_steps", "5",
    ]  # fmt: skip
    log_path = tmp_path / "first.log"
    with open(log_path, "w") as log:
        process = subprocess.Popen(command, cwd=REPO_ROOT, env=script_env(), stdout=log, stderr=subprocess.STDOUT)
        deadline = time.time() + 240
        checkpoint = None
        while time.time() < deadline and process.poll() is None:
            found = sorted((output_dir / "checkpoints").glob("task-2-*/checkpoint-*"))
            if found:
                checkpoint = found[0]
                break
            time.sleep(0.05)
        process.send_signal(signal.SIGKILL)
        process.wait()
    assert checkpoint is not None, "no checkpoint of task 2 appeared:\n" + log_path.read_text()[-3000:]
    assert process.returncode == -signal.SIGKILL
    assert not (output_dir / "task-2" / "model_index.json").exists()
    task_1_weights = output_dir / "task-1" / "unet" / "diffusion_pytorch_model.safetensors"
    assert task_1_weights.is_file()
    task_1_mtime = task_1_weights.stat().st_mtime_ns

    resumed = subprocess.run(
        [*command, "--resume_from_checkpoint", "latest"],
        cwd=REPO_ROOT,
        env=script_env(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    output = resumed.stdout + resumed.stderr
    assert resumed.returncode == 0, output[-5000:]
    assert "Task 1 was finished by an earlier run" in output
    assert "Resuming task 2" in output
    assert "Final average accuracy" in output
    assert task_1_weights.stat().st_mtime_ns == task_1_mtime

    metrics = json.loads((output_dir / "metrics.json").read_text())
    matrix = metrics["accuracy_matrix"]
    assert len(matrix) == 2 and len(matrix[0]) == 2 and matrix[0][1] is None
    assert all(0.0 <= a <= 1.0 for a in (matrix[0][0], matrix[1][0], matrix[1][1]))
    assert len(metrics["accuracy_seen"]) == 2
    assert 0.0 <= metrics["average_accuracy"] <= 1.0
    assert metrics["rehearsal"]["2"]["per_class"] == {str(c): 4 for c in range(4)}
    assert (output_dir / "task-2" / "model_index.json").is_file()


# -------------------------------------------------------------------------------------------------- two processes

WRAPPER = textwrap.dedent(
    """
    import json
    import sys
    from pathlib import Path

    import torch
    from accelerate import Accelerator
    from accelerate.utils import DistributedType

    from jdcl.config import JDCLTrainingConfig
    from jdcl.trainer import ContinualTrainer

    config = JDCLTrainingConfig.from_file(sys.argv[1])
    accelerator = Accelerator(cpu=True)
    assert accelerator.num_processes == 2, accelerator.num_processes
    assert accelerator.distributed_type == DistributedType.MULTI_CPU, accelerator.distributed_type
    marker = Path(sys.argv[2]) / f"rank-{accelerator.process_index}.json"
    marker.write_text(json.dumps({"num_processes": accelerator.num_processes, "rank": accelerator.process_index}))
    metrics = ContinualTrainer(config, accelerator=accelerator).train()
    (Path(sys.argv[2]) / f"done-{accelerator.process_index}.json").write_text(json.dumps(metrics["accuracy_matrix"]))
    accelerator.end_training()
    if torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()
    """
)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.skipif(shutil.which("accelerate") is None, reason="needs the accelerate launcher")
def test_two_cpu_processes(tmp_path):
    output_dir = tmp_path / "run"
    markers = tmp_path / "markers"
    markers.mkdir()
    config = {
        "output_dir": str(output_dir),
        "resolution": 8,
        "num_tasks": 2,
        "class_order": [0, 1, 2, 3],
        "unet_config": TINY_UNET,
        "train_batch_size": 8,
        "local_train_steps": 3,
        "global_train_steps": 3,
        # Odd quota: the two processes generate 3 and 2 of each class.
        "replay_samples_per_class": 5,
        "replay_inference_steps": 2,
        "grid_inference_steps": 2,
        "grid_samples_per_class": 1,
        "logger": "none",
        "show_progress": False,
    }
    config_path = tmp_path / "config.yaml"
    config_path.write_text(yaml.safe_dump(config))
    wrapper = tmp_path / "wrapper.py"
    wrapper.write_text(WRAPPER)
    env = script_env(threads=1)
    env["ACCELERATE_USE_CPU"] = "true"
    command = [
        shutil.which("accelerate"), "launch",
        "--multi_gpu", "--num_processes", "2", "--num_machines", "1", "--mixed_precision", "no",
        "--dynamo_backend", "no", "--main_process_port", str(free_port()),
        str(wrapper), str(config_path), str(markers),
    ]  # fmt: skip
    result = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-5000:]

    for rank in (0, 1):
        assert json.loads((markers / f"rank-{rank}.json").read_text()) == {"num_processes": 2, "rank": rank}
    # Both processes finished with the same results.
    done = [json.loads((markers / f"done-{rank}.json").read_text()) for rank in (0, 1)]
    assert done[0] == done[1]

    metrics = json.loads((output_dir / "metrics.json").read_text())
    assert metrics["accuracy_matrix"] == done[0]
    assert len(metrics["accuracy_matrix"]) == 2 and metrics["accuracy_matrix"][0][1] is None
    rehearsal = metrics["rehearsal"]["2"]
    # The whole quota, generated in two halves and gathered: 5 per class, not 3 (one share) nor 10 (twice).
    assert rehearsal["per_class"] == {str(c): 5 for c in range(4)}
    assert rehearsal["kept"] + rehearsal["filled"] == 20
    assert rehearsal["generated"] >= rehearsal["kept"]
    for k in (1, 2):
        assert (output_dir / f"task-{k}" / "unet" / "diffusion_pytorch_model.safetensors").is_file()
    assert not list(output_dir.glob("*.tmp"))


def test_quality_extractors_are_given_comma_separated():
    config = parse_config(["--quality_metrics", "referee, dinov2", "--quality_samples_per_class", "50"])
    assert config.quality_metrics == ["referee", "dinov2"] and config.quality_samples_per_class == 50


# ------------------------------------------------------------------------------- --help, presets, entry point


def test_help_shows_every_flag_with_its_docstring_and_default_in_its_group(capsys):
    import dataclasses
    import re

    from jdcl.cli import FLAG_GROUPS, build_parser, field_descriptions
    from jdcl.strategies.base import registered_options

    fields = [f.name for f in dataclasses.fields(JDCLTrainingConfig)]
    descriptions = field_descriptions()
    # One source: every field is documented in the configuration's docstring, and belongs to exactly one group.
    assert set(descriptions) >= set(fields), sorted(set(fields) - set(descriptions))
    grouped = [name for names in FLAG_GROUPS.values() for name in names]
    assert sorted(grouped) == sorted(fields)
    assert {"data", "model", "method", "rehearsal", "semi-supervised", "quality", "speed", "outputs", "Hub"} <= set(
        FLAG_GROUPS
    )

    with pytest.raises(SystemExit):
        build_parser().parse_args(["--help"])
    # Compared without whitespace: the help wraps lines, at hyphens too.
    text = re.sub(r"\s+", "", capsys.readouterr().out)
    defaults = JDCLTrainingConfig().to_dict(include_secrets=True)
    for name in fields:
        assert f"--{name}" in text, name
        if name != "hub_token":
            assert re.sub(r"\s+", "", descriptions[name]) in text, name
        shown = json.dumps(defaults[name]) if isinstance(defaults[name], (dict, list)) else str(defaults[name])
        shown = re.escape(re.sub(r"\s+", "", shown))
        assert re.search(rf"--{name}(?![a-z_]).*?\(default:{shown}\)", text), name
    for name, option in registered_options().items():
        assert f"--{name}" in text and re.sub(r"\s+", "", option.help) in text
        assert f"(default:{option.default})" in text
    # The groups are sections of the help, in order.
    positions = [text.index(f"{group}:--") for group in FLAG_GROUPS]
    assert positions == sorted(positions)


def test_report_to_is_the_logger_flag():
    assert parse_config(["--report_to", "none"]).logger == "none"
    assert parse_config(["--logger", "none"]).logger == "none"


def test_a_shipped_preset_is_found_by_name_and_a_path_still_works(tmp_path):
    from jdcl.config import PRESETS_DIR

    by_name = parse_config(["--config", "cifar10", "--num_tasks", "2"])
    by_path = parse_config(["--config", str(REPO_ROOT / "examples" / "configs" / "cifar10.yaml"), "--num_tasks", "2"])
    assert by_name == by_path and by_name.train_batch_size == 256 and by_name.num_tasks == 2
    # examples/configs is the package's presets folder itself: one copy, that cannot drift.
    assert (REPO_ROOT / "examples" / "configs").resolve() == PRESETS_DIR.resolve()
    with pytest.raises(ValueError, match="shipped preset: cifar10, cifar100_10t"):
        parse_config(["--config", "cifar11"])


def test_the_package_declares_the_entry_point_and_ships_the_presets():
    import ast

    setup_call = next(
        node
        for node in ast.walk(ast.parse((REPO_ROOT / "setup.py").read_text()))
        if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "setup"
    )
    arguments = {keyword.arg: ast.literal_eval(keyword.value) for keyword in setup_call.keywords if keyword.arg in (
        "entry_points", "package_data"
    )}  # fmt: skip
    assert arguments["entry_points"]["console_scripts"] == ["jdcl-train=jdcl.cli:main"]
    assert "presets/*.yaml" in arguments["package_data"]["jdcl"]
    import jdcl.cli

    assert callable(jdcl.cli.main)


@pytest.mark.parametrize("argv", [["--hub_token", "hf_secret"], ["--num_tasks", "2", "--hub_token=hf_secret"]])
def test_a_token_flag_is_refused_before_anything_runs(argv, monkeypatch):
    from jdcl import cli

    # The refusal comes before the parser or the trainer sees the arguments.
    monkeypatch.setattr(cli, "build_parser", lambda: pytest.fail("the parser ran"))
    with pytest.raises(SystemExit) as error:
        cli.main(argv)
    assert "HF_TOKEN" in str(error.value) and "huggingface-cli login" in str(error.value)
    assert "hf_secret" not in str(error.value)


def test_a_method_kept_in_another_package_is_registered_by_its_entry_point(tmp_path):
    # An installed package (its module and its dist-info with a `jdcl.strategies` entry point) holding the example
    # method of examples/methods/, as `pip install` of a user's own repository leaves it.
    shutil.copy(REPO_ROOT / "examples" / "methods" / "smooth_finetune.py", tmp_path / "smooth_finetune.py")
    dist_info = tmp_path / "my_methods-0.1.dist-info"
    dist_info.mkdir()
    (dist_info / "METADATA").write_text("Metadata-Version: 2.1\nName: my-methods\nVersion: 0.1\n")
    (dist_info / "entry_points.txt").write_text("[jdcl.strategies]\nsmooth_finetune = smooth_finetune\n")
    env = script_env()
    env["PYTHONPATH"] = os.pathsep.join([str(tmp_path), env["PYTHONPATH"]])
    flags = ["--strategy", "smooth_finetune", "--smooth_label_smoothing", "0.2", "--output_dir", str(tmp_path / "run")]
    flags += [*TINY_FLAGS, "--local_train_steps", "2", "--global_train_steps", "2"]
    result = subprocess.run(
        [sys.executable, str(SCRIPT), *flags], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, (result.stdout + result.stderr)[-3000:]
    assert "Final average accuracy" in result.stdout
    recorded = json.loads((tmp_path / "run" / "run_config.json").read_text())["identity"]
    assert recorded["strategy"] == "smooth_finetune" and recorded["smooth_label_smoothing"] == 0.2
