"""The Hugging Face Hub folder of a student, and its upload.

:func:`write_hub_folder` writes everything a Hub repository needs so that the model loads by its id with
``AutoModel``/``AutoTokenizer`` (``trust_remote_code=True``) and ``SentenceTransformer`` exactly as from a
local folder: ``config.json`` (with ``auto_map``), ``model.safetensors``, the tokenizer files, the remote
code, the sentence-transformers files, ``training.json`` when there is one, ``results.json`` when given,
and the model card (``README.md``). :func:`push_folder` uploads it (``create_repo`` + ``upload_folder``;
the token comes from ``HF_TOKEN`` or ``hf auth login``, as huggingface_hub finds it).
"""

from __future__ import annotations

import os
import shutil

from ..export.common import scrub_tokenizer_config
from ..model.modeling_bertapprox import BertApproxModel
from .model_card import load_json_source, teacher_hub_id, write_model_card

COPIED = ("training.json",)


def check_repo_id(repo_id: str) -> str:
    """``repo_id`` if it is a valid ``owner/name`` Hub model id, else a ``ValueError`` that says why."""
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    if not isinstance(repo_id, str) or repo_id.count("/") != 1:
        raise ValueError(f"repo id must look like 'owner/name', got {repo_id!r}")
    try:
        validate_repo_id(repo_id)
    except HFValidationError as error:
        raise ValueError(f"invalid repo id {repo_id!r}: {error}") from error
    return repo_id


def list_folder(folder: str) -> list[dict]:
    """``[{"path", "bytes"}]`` of every file under ``folder`` (relative paths, sorted)."""
    files = []
    for root, _, names in os.walk(folder):
        for name in names:
            path = os.path.join(root, name)
            files.append({"path": os.path.relpath(path, folder), "bytes": os.path.getsize(path)})
    return sorted(files, key=lambda f: f["path"])


def write_hub_folder(
    model_dir: str | os.PathLike,
    out_dir: str | os.PathLike,
    repo_id: str | None = None,
    results: str | os.PathLike | dict | None = None,
    training_report: str | os.PathLike | dict | None = None,
    vocab_dir: str | os.PathLike | None = None,
    base_model: str | None = None,
    license: str | None = None,
    overwrite: bool = False,
) -> list[dict]:
    """Write the Hub folder of the student in ``model_dir`` to ``out_dir``; returns its file listing.

    The model is loaded and saved again (``save_pretrained``), so the folder has this package's remote
    code and the sentence-transformers files even when ``model_dir`` was saved by an older version;
    ``config.teacher`` becomes the teacher's Hub id where it is known (``base_model`` or a known folder name).
    ``out_dir`` must be new or empty unless ``overwrite``.
    """
    model_dir, out_dir = os.fspath(model_dir), os.fspath(out_dir)
    if not os.path.isdir(model_dir):
        raise FileNotFoundError(f"model folder not found: {model_dir}")
    if repo_id is not None:
        check_repo_id(repo_id)
    if os.path.realpath(model_dir) == os.path.realpath(out_dir):
        raise ValueError("the Hub folder must differ from the model folder")
    results = load_json_source(results, "benchmark results")  # fail on a bad file before writing anything
    if os.path.isdir(out_dir) and os.listdir(out_dir):
        if not overwrite:
            raise FileExistsError(f"{out_dir} exists and is not empty (overwrite it with --overwrite)")
        shutil.rmtree(out_dir)
    model = BertApproxModel.from_pretrained(model_dir)
    model.get_tokenizer()
    teacher = base_model or teacher_hub_id(model.config.teacher)
    if teacher:  # a local teacher folder means nothing on the Hub; its Hub id does
        model.config.teacher = teacher
    model.save_pretrained(out_dir)
    scrub_tokenizer_config(out_dir)
    for name in COPIED:
        if os.path.isfile(os.path.join(model_dir, name)):
            shutil.copy2(os.path.join(model_dir, name), os.path.join(out_dir, name))
    if results is not None:
        from ..pipeline.jsonio import write_json_atomic

        write_json_atomic(os.path.join(out_dir, "results.json"), results)
    write_model_card(
        os.path.join(out_dir, "README.md"),
        model_dir,
        repo_id=repo_id,
        results=results,
        training_report=training_report,
        vocab_dir=vocab_dir,
        base_model=base_model,
        license=license,
    )
    return list_folder(out_dir)


def push_folder(folder: str, repo_id: str, private: bool = False, commit_message: str | None = None) -> str:
    """Create the model repository if needed and upload ``folder``; returns the commit URL."""
    from huggingface_hub import create_repo, upload_folder

    check_repo_id(repo_id)
    if not os.path.isfile(os.path.join(folder, "config.json")):
        raise FileNotFoundError(f"not a Hub folder (no config.json): {folder}")
    try:
        create_repo(repo_id, private=private, exist_ok=True, repo_type="model")
        commit = upload_folder(
            repo_id=repo_id,
            folder_path=folder,
            repo_type="model",
            commit_message=commit_message or "Upload BertApprox student",
        )
    except Exception as error:  # huggingface_hub raises HTTP, auth and offline errors of many types
        raise OSError(f"upload to the Hub repository {repo_id} failed: {error}") from error
    return str(getattr(commit, "commit_url", commit))
