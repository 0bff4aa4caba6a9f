"""Share a model folder on the Hugging Face Hub."""

from pathlib import Path

from huggingface_hub import HfApi


def push_folder(
    folder: str | Path, repo_id: str | None, private: bool = False, commit_message: str | None = None
) -> str:
    """Create `repo_id` if needed and upload `folder` into it; returns the commit URL. The token comes from the
    usual places (`HF_TOKEN`, `hf auth login`)."""
    if not repo_id:
        raise ValueError("Pushing needs a repository id: pass --hub_model_id user/name.")
    api = HfApi()
    api.create_repo(repo_id, private=private, exist_ok=True)
    info = api.upload_folder(folder_path=str(folder), repo_id=repo_id, commit_message=commit_message or "Upload model")
    return str(info)


__all__ = ["push_folder"]
