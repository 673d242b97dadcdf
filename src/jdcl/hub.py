# Copyright 2025 The JDCL Authors. All rights reserved.
#
# Licensed under the Apache License, Version 2.0 (the "License");
# you may not use this file except in compliance with the License.
# You may obtain a copy of the License at
#
#     http://www.apache.org/licenses/LICENSE-2.0
#
# Unless required by applicable law or agreed to in writing, software
# distributed under the License is distributed on an "AS IS" BASIS,
# WITHOUT WARRANTIES OR CONDITIONS OF ANY KIND, either express or implied.
# See the License for the specific language governing permissions and
# limitations under the License.
"""Per-task checkpoints on the Hugging Face Hub: one repository, one branch `task-K` per task, `main` the latest."""

from __future__ import annotations

import math
import os
from pathlib import Path

from diffusers.utils import logging
from huggingface_hub import HfApi, snapshot_download
from huggingface_hub.errors import HFValidationError


__all__ = ["TaskHubUploader", "download_checkpoint", "task_revision"]

logger = logging.get_logger(__name__)


def task_revision(task_index: int) -> str:
    """
    Name of the Hub branch that holds the checkpoint saved after a task.

    Args:
        task_index (`int`):
            The task, 1-based.

    Returns:
        `str`: `"task-{task_index}"`, the `revision` to pass to `JDCLPipeline.from_pretrained`.
    """
    if isinstance(task_index, bool) or not isinstance(task_index, int) or task_index < 1:
        raise ValueError(f"`task_index` is 1-based and must be a positive integer, got {task_index!r}.")
    return f"task-{task_index}"


def download_checkpoint(
    name_or_path: str, revision: str | None = None, flag: str = "--pretrained_model_name_or_path"
) -> Path:
    """
    The local folder of a saved pipeline or model: `name_or_path` itself when it is a folder, else the Hub repository's
    `revision` downloaded to the cache (`huggingface_hub.snapshot_download`, which reads the cache when offline).

    Args:
        name_or_path (`str`):
            A local folder, or a Hub repository id.
        revision (`str`, *optional*, defaults to `None`):
            The Hub branch, tag or commit, e.g. `"task-3"`; the default branch when `None`. A local folder has none.
        flag (`str`, *optional*, defaults to `"--pretrained_model_name_or_path"`):
            The flag that named the checkpoint, for errors.

    Returns:
        `Path`: the folder.
    """
    if Path(name_or_path).is_dir():
        if revision is not None:
            raise ValueError(
                f"{flag} {name_or_path} is a local folder, which has no revision {revision!r}; pass the folder of that "
                "task itself (e.g. runs/my-run/task-3) and drop the revision."
            )
        return Path(name_or_path)
    try:
        return Path(snapshot_download(name_or_path, revision=revision, repo_type="model"))
    except (OSError, HFValidationError) as error:
        where = f"{name_or_path}@{revision}" if revision is not None else name_or_path
        raise ValueError(
            f"{flag} {where} is neither a local folder nor a Hub repository that could be downloaded ({error}); check "
            "the path, the repository id and the revision (a task of a jdcl run is the branch `task-K`)."
        ) from None


class TaskHubUploader:
    """
    Uploads the checkpoint folder of each task to one Hub repository.

    The folder saved after task `K` is committed to the branch `task-K` and to `main`, so that
    `JDCLPipeline.from_pretrained(repo_id, revision="task-K")` loads the model after task `K` and the default revision
    always holds the latest. Each commit mirrors the folder exactly: files of an earlier task that the new folder
    lacks are deleted from that revision.

    Args:
        repo_id (`str`):
            The repository, `"owner/name"` or `"name"` (the Hub then puts it under the token's user).
        token (`str`, *optional*, defaults to `None`):
            Hub token with write access; `None` uses the locally saved login. It is handed to
            `huggingface_hub.HfApi` only and never stored, shown or logged by this class.
        private (`bool`, *optional*, defaults to `None`):
            Visibility of a repository that does not exist yet; `None` follows the Hub's default.
        api (`huggingface_hub.HfApi`, *optional*, defaults to `None`):
            A ready client to use instead of building one (it carries its own token, so do not pass `token` too).
    """

    def __init__(
        self,
        repo_id: str,
        token: str | None = None,
        private: bool | None = None,
        api: HfApi | None = None,
    ) -> None:
        if not isinstance(repo_id, str) or not repo_id.strip() or repo_id.count("/") > 1:
            raise ValueError(f"`repo_id` must look like 'owner/name' or 'name', got {repo_id!r}.")
        if api is not None and token is not None:
            raise ValueError(
                "Pass either `api` or `token`, not both: an existing `HfApi` carries its own token. "
                "Build the client with `HfApi(token=...)` or let this class build it."
            )
        self.repo_id = repo_id.strip()
        self.private = private
        self.api = api if api is not None else HfApi(token=token, library_name="jdcl")
        self._repo_created = False

    def __repr__(self) -> str:
        # Only public, non-secret settings: the token lives in `self.api` and must not reach logs or tracebacks.
        return f"{type(self).__name__}(repo_id={self.repo_id!r}, private={self.private!r})"

    def create_repo(self) -> str:
        """
        Creates the model repository if it does not exist yet.

        Returns:
            `str`: The repository id as the Hub gives it back (with the owner filled in); later uploads use it.
        """
        repo_url = self.api.create_repo(self.repo_id, private=self.private, exist_ok=True, repo_type="model")
        self.repo_id = repo_url.repo_id
        self._repo_created = True
        logger.info(f"Using Hub repository {self.repo_id}.")
        return self.repo_id

    def upload_task(
        self,
        folder: str | os.PathLike,
        task_index: int,
        accuracy: float,
        num_tasks: int,
    ) -> None:
        """
        Commits the checkpoint folder of one task to its branch `task-K`, then to `main`.

        The repository is created first if [`~TaskHubUploader.create_repo`] has not been called.

        Args:
            folder (`str` or `os.PathLike`):
                The saved pipeline of this task (`model_index.json`, `unet/`, `scheduler/`, `README.md`, ...).
            task_index (`int`):
                The task just trained, 1-based.
            accuracy (`float`):
                Accuracy on the classes seen so far, written in the commit message.
            num_tasks (`int`):
                Total number of tasks of the run, written in the commit message.
        """
        folder = Path(folder)
        if not folder.is_dir():
            raise ValueError(f"`folder` {str(folder)!r} is not a directory; pass the folder the task was saved to.")
        revision = task_revision(task_index)
        if isinstance(num_tasks, bool) or not isinstance(num_tasks, int) or num_tasks < task_index:
            raise ValueError(f"`num_tasks` must be an integer >= `task_index` ({task_index}), got {num_tasks!r}.")
        try:
            accuracy = float(accuracy)
        except (TypeError, ValueError) as error:
            raise ValueError(f"`accuracy` must be a number, got {accuracy!r}.") from error
        if math.isnan(accuracy):
            raise ValueError("`accuracy` is NaN; evaluate the model on a non-empty test set before uploading.")
        if not self._repo_created:
            self.create_repo()

        commit_message = f"Task {task_index}/{num_tasks}: accuracy on seen classes {accuracy:.4f}"
        self.api.create_branch(self.repo_id, branch=revision, exist_ok=True, repo_type="model")
        for target in (revision, "main"):
            self.api.upload_folder(
                repo_id=self.repo_id,
                folder_path=folder,
                repo_type="model",
                revision=target,
                commit_message=commit_message,
                # Each revision must be exactly this task's checkpoint, not a mix with files of earlier tasks.
                delete_patterns="*",
            )
            logger.info(f"Uploaded task {task_index}/{num_tasks} to {self.repo_id}@{target}.")
