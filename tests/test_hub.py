import logging
from unittest.mock import MagicMock, call

import pytest
from huggingface_hub import HfApi, RepoUrl

from jdcl.hub import TaskHubUploader, task_revision


SECRET = "hf_test_token_do_not_leak_123"


def _api(repo_id="someone/jdcl-run"):
    api = MagicMock(spec=HfApi)
    api.create_repo.return_value = RepoUrl(f"https://huggingface.co/{repo_id}")
    return api


def test_create_repo_uses_the_id_the_hub_returns():
    api = _api("someone/jdcl-run")
    uploader = TaskHubUploader("jdcl-run", private=True, api=api)
    assert uploader.create_repo() == "someone/jdcl-run"
    api.create_repo.assert_called_once_with("jdcl-run", private=True, exist_ok=True, repo_type="model")
    assert uploader.repo_id == "someone/jdcl-run"


def test_upload_task_branch_then_branch_upload_then_main(tmp_path):
    api = _api()
    uploader = TaskHubUploader("someone/jdcl-run", api=api)
    uploader.create_repo()
    uploader.upload_task(tmp_path, task_index=2, accuracy=0.87654, num_tasks=5)

    message = "Task 2/5: accuracy on seen classes 0.8765"
    upload = {
        "repo_id": "someone/jdcl-run",
        "folder_path": tmp_path,
        "repo_type": "model",
        "commit_message": message,
        "delete_patterns": "*",
    }
    assert api.mock_calls[1:] == [
        call.create_branch("someone/jdcl-run", branch="task-2", exist_ok=True, repo_type="model"),
        call.upload_folder(**upload, revision="task-2"),
        call.upload_folder(**upload, revision="main"),
    ]
    # One repository creation per run, however many tasks are uploaded.
    uploader.upload_task(tmp_path, task_index=3, accuracy=0.5, num_tasks=5)
    assert api.create_repo.call_count == 1
    assert api.create_branch.call_args_list[-1] == call(
        "someone/jdcl-run", branch="task-3", exist_ok=True, repo_type="model"
    )
    assert [c.kwargs["revision"] for c in api.upload_folder.call_args_list] == ["task-2", "main", "task-3", "main"]
    assert api.upload_folder.call_args_list[-1].kwargs["commit_message"] == "Task 3/5: accuracy on seen classes 0.5000"


def test_upload_task_creates_the_repo_when_not_done_yet(tmp_path):
    api = _api("me/run")
    TaskHubUploader("run", api=api).upload_task(tmp_path, task_index=1, accuracy=1.0, num_tasks=1)
    assert api.mock_calls[0] == call.create_repo("run", private=None, exist_ok=True, repo_type="model")
    assert api.create_branch.call_args.args == ("me/run",)
    assert {c.kwargs["repo_id"] for c in api.upload_folder.call_args_list} == {"me/run"}


def test_token_goes_to_hfapi_only_and_never_shows(tmp_path, caplog, monkeypatch):
    built = {}

    def fake_hf_api(**kwargs):
        built.update(kwargs)
        return _api()

    monkeypatch.setattr("jdcl.hub.HfApi", fake_hf_api)
    with caplog.at_level(logging.DEBUG):
        uploader = TaskHubUploader("someone/jdcl-run", token=SECRET)
        uploader.create_repo()
        uploader.upload_task(tmp_path, task_index=1, accuracy=0.9, num_tasks=2)
    assert built["token"] == SECRET
    assert SECRET not in repr(uploader)
    assert SECRET not in str(uploader)
    assert "someone/jdcl-run" in repr(uploader)
    # The log lines were captured (so the check below can fail) and hold no token.
    assert "Uploaded task 1/2 to someone/jdcl-run@task-1" in caplog.text
    assert SECRET not in caplog.text
    assert SECRET not in [value for value in vars(uploader).values() if isinstance(value, str)]


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"task_index": 0}, "1-based"),
        ({"num_tasks": 1}, "num_tasks"),
        ({"accuracy": float("nan")}, "NaN"),
        ({"accuracy": "high"}, "number"),
    ],
)
def test_upload_task_rejects_bad_input_before_any_hub_call(tmp_path, kwargs, message):
    api = _api()
    arguments = {"folder": tmp_path, "task_index": 2, "accuracy": 0.5, "num_tasks": 3, **kwargs}
    with pytest.raises(ValueError, match=message):
        TaskHubUploader("someone/jdcl-run", api=api).upload_task(**arguments)
    assert api.mock_calls == []


def test_uploader_rejects_missing_folder_bad_repo_id_and_token_with_api(tmp_path):
    with pytest.raises(ValueError, match="not a directory"):
        TaskHubUploader("a/b", api=_api()).upload_task(tmp_path / "missing", 1, 0.5, 2)
    with pytest.raises(ValueError, match="owner/name"):
        TaskHubUploader("a/b/c", api=_api())
    with pytest.raises(ValueError, match="either `api` or `token`") as error:
        TaskHubUploader("a/b", token=SECRET, api=_api())
    assert SECRET not in str(error.value)


def test_task_revision():
    assert task_revision(3) == "task-3"
    with pytest.raises(ValueError, match="1-based"):
        task_revision(0)
