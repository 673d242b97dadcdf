from pathlib import Path

import pytest
from huggingface_hub import ModelCard

from jdcl.model_card import make_task_model_card, task_model_card_template_path


CLASS_NAMES = ["airplane", "automobile", "bird", "cat", "deer", "dog"]


def _card(**overrides):
    kwargs = {
        "task_index": 2,
        "num_tasks": 3,
        "dataset_name": "uoft-cs/cifar10",
        "class_names": CLASS_NAMES,
        "class_order": [4, 1, 0, 5, 2, 3],
        "classes_seen": [4, 1, 0, 5],
        "accuracy_matrix": [[0.9, None, None], [0.6, 0.8, None]],
        "metrics": {"average_accuracy": 0.7, "forgetting": 0.3},
        "repo_id": "someone/jdcl-cifar10",
    }
    kwargs.update(overrides)
    return make_task_model_card(**kwargs)


def test_template_ships_with_the_package():
    path = task_model_card_template_path()
    assert path.name == "task_model_card.md"
    assert "{{ card_data }}" in path.read_text(encoding="utf-8")


def test_card_body_has_matrix_metrics_classes_and_loading_snippet():
    text = str(_card())
    assert "| | task 1 | task 2 | task 3 |" in text
    assert "| after task 1 | 0.9000 |  |  |" in text
    assert "| after task 2 | 0.6000 | 0.8000 |  |" in text
    assert "| Average accuracy | 0.7000 |" in text
    assert "| Forgetting | 0.3000 |" in text
    assert "task 2 of 3" in text
    # Classes seen so far in their arrival order, and the task-by-task class order (3 tasks of 2).
    assert "deer (4), automobile (1), airplane (0), dog (5)" in text
    assert "task 3: bird (2), cat (3)" in text
    assert 'JDCLPipeline.from_pretrained("someone/jdcl-cifar10", revision="task-2")' in text
    assert "import jdcl" in text
    assert "pipe(class_labels=[4, 1])" in text
    assert "pipe.classify(images)" in text
    assert "![Samples, one row per class](samples.png)" in text


def test_card_metadata_parses_back():
    data = ModelCard(str(_card())).data
    assert data.library_name == "jdcl"
    assert data.datasets == ["uoft-cs/cifar10"]
    assert data.pipeline_tag == "image-classification"
    for tag in ["jdcl", "diffusers", "continual-learning", "class-incremental", "unconditional-image-generation"]:
        assert tag in data.tags


def test_local_dataset_is_not_listed_and_local_path_has_no_revision():
    text = str(_card(dataset_name="digits", repo_id=None, sample_grid_path=None))
    assert ModelCard(text).data.datasets is None
    assert 'from_pretrained("path/to/this/checkpoint")' in text
    assert "revision=" not in text
    assert "## Samples" not in text


def test_training_config_is_shown_without_secrets():
    text = str(_card(training_config={"learning_rate": 0.0002, "hub_token": "hf_abcdef", "nested": {"api_key": "k"}}))
    assert '"learning_rate": 0.0002' in text
    assert "hf_abcdef" not in text
    assert "api_key" not in text


def test_card_saves_and_reloads(tmp_path):
    path = Path(tmp_path) / "README.md"
    _card().save(path)
    reloaded = ModelCard.load(path)
    assert reloaded.data.library_name == "jdcl"
    assert 'revision="task-2"' in reloaded.text


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"task_index": 4}, r"\[1, 3\]"),
        ({"task_index": 0}, "1-based"),
        ({"classes_seen": [0, 9]}, "no name"),
        ({"accuracy_matrix": [[0.9]]}, "one row per task"),
        ({"accuracy_matrix": [[0.9], [0.6]]}, "ragged"),
    ],
)
def test_card_rejects_bad_input(overrides, message):
    with pytest.raises(ValueError, match=message):
        _card(**overrides)


def test_each_strategy_describes_itself_and_the_card_says_so():
    from jdcl.strategies import STRATEGIES, ContinualStrategy

    descriptions = {name: strategy.card_description for name, strategy in STRATEGIES.items()}
    # Every registered method has its own words, none the base class's placeholder or another method's.
    assert ContinualStrategy.card_description not in descriptions.values()
    assert len(set(descriptions.values())) == len(descriptions)
    for name, description in descriptions.items():
        text = str(_card(strategy=name))
        assert description in text
        assert f"`{name}`" in text
    # A finetune card says nothing of generated rehearsal or distillation, which only JDCL's describes.
    finetune = str(_card(strategy="finetune")).split("## Classes")[0]
    assert "# finetune on uoft-cs/cifar10: model after task 2 of 3" in finetune
    assert "distil" not in finetune and "generated" not in finetune and "no rehearsal" in finetune
    jdcl = str(_card()).split("## Classes")[0]
    assert "# JDCL on uoft-cs/cifar10: model after task 2 of 3" in jdcl
    assert "distilled" in jdcl and "generated rehearsal" in jdcl


def test_card_of_an_unregistered_strategy_needs_its_description():
    with pytest.raises(ValueError, match="strategy_description"):
        _card(strategy="my_method")
    text = str(_card(strategy="my_method", strategy_description="Replays nothing, remembers everything."))
    assert "**Method (`my_method`).** Replays nothing, remembers everything." in text


def test_model_index_holds_the_tasks_accuracy():
    data = ModelCard(str(_card(accuracy_seen=0.6789))).data
    assert data.model_name == "jdcl-cifar10"
    results = {result.metric_name: result for result in data.eval_results}
    assert set(results) == {"Accuracy on the 4 classes seen after task 2", "Average accuracy over tasks 1-2"}
    seen = results["Accuracy on the 4 classes seen after task 2"]
    assert (seen.metric_type, seen.metric_value, seen.task_type) == ("accuracy", 0.6789, "image-classification")
    assert (seen.dataset_type, seen.dataset_split) == ("uoft-cs/cifar10", "test")
    assert results["Average accuracy over tasks 1-2"].metric_value == 0.7
    # An accuracy that was not measured (NaN, continued checkpoints) is left out rather than published.
    data = ModelCard(str(_card(metrics={"average_accuracy": float("nan")}, repo_id=None))).data
    assert data.eval_results is None and data.model_name.startswith("JDCL on uoft-cs/cifar10")


def test_card_shows_no_machine_path(tmp_path):
    from jdcl.config import JDCLTrainingConfig

    data_dir = tmp_path / "data" / "my_images"
    data_dir.mkdir(parents=True)
    config = JDCLTrainingConfig(
        output_dir=str(tmp_path / "runs" / "digits-jdcl"),
        cache_dir=str(tmp_path / "cache"),
        train_data_dir=str(data_dir),
        pretrained_model_name_or_path=str(tmp_path / "runs" / "earlier" / "task-2"),
        hub_token="hf_secret",
    )
    card = _card(dataset_name=str(data_dir), training_config=config.to_dict(), repo_id=None)
    text = str(card)
    assert str(tmp_path) not in text and "hf_secret" not in text
    assert "JDCL on my_images" in text
    assert '"train_data_dir": "my_images"' in text and '"pretrained_model_name_or_path": "task-2"' in text
    assert '"output_dir"' not in text and '"cache_dir"' not in text
    assert ModelCard(text).data.datasets is None
