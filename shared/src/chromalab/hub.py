"""Hub-style weights for every paper module: a folder (or a Hugging Face Hub repository) with
``config.json`` (the module's constructor arguments) and ``model.safetensors`` (its tensors),
through ``huggingface_hub``'s :class:`~huggingface_hub.PyTorchModelHubMixin`::

    module.save_pretrained("capshapes-cic")              # config.json + model.safetensors
    CICModule.from_pretrained("capshapes-cic")           # a local folder (or a repo id)

Nothing in these files is executed: JSON and safetensors only, no pickle. Loading is strict:
missing or unexpected tensors, a missing file or an unreadable safetensors file are errors that
name them. State that is not a tensor nor a constructor argument (film_color's caption
vocabulary) is what the module's ``on_save_checkpoint`` writes, kept as JSON in
``chromalab_state.json`` and given back to its ``on_load_checkpoint``. A loaded module is marked
restored (:meth:`chromalab.tasks.ColorizationTask.mark_loaded`): a later ``fit`` does not reload
its pretrained parts or ``init_from`` over it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from huggingface_hub import PyTorchModelHubMixin, constants, hf_hub_download
from huggingface_hub.errors import EntryNotFoundError

__all__ = ["STATE_FILE", "HubMixin", "is_hub_folder", "load_module", "read_config"]

#: The module's non-tensor state (its ``on_save_checkpoint`` entries), as JSON.
STATE_FILE = "chromalab_state.json"


def _file(model_id: str, name: str, required: bool, **download: Any) -> Path | None:
    folder = Path(model_id)
    if folder.is_dir():
        path = folder / name
        if path.is_file():
            return path
        if required:
            raise FileNotFoundError(f"{folder}: no {name} (a save_pretrained folder has it)")
        return None
    try:
        return Path(hf_hub_download(repo_id=model_id, filename=name, **download))
    except EntryNotFoundError:
        if required:
            raise
        return None


def read_config(model_id: str | Path, **download: Any) -> dict[str, Any]:
    """The ``config.json`` (the constructor arguments) of a ``save_pretrained`` folder or Hub
    repository; ``download``: ``hf_hub_download``'s options (``revision``, ``token``, ...)."""
    path = _file(str(model_id), constants.CONFIG_NAME, True, **download)
    assert path is not None  # required
    return json.loads(path.read_text())


class HubMixin(
    PyTorchModelHubMixin,
    library_name="chromalab",
    tags=["colorization", "chromalab"],
    repo_url="https://github.com/chromalab/chromalab",
):
    """``save_pretrained`` / ``from_pretrained`` for a chromalab task
    (:class:`chromalab.tasks.ColorizationTask`, which has ``mark_loaded``)."""

    def _save_pretrained(self, save_directory: Path) -> None:
        super()._save_pretrained(save_directory)
        state: dict[str, Any] = {}
        self.on_save_checkpoint(state)
        if state:
            try:
                text = json.dumps(state, indent=1)
            except TypeError as err:
                raise TypeError(f"{type(self).__name__}'s checkpoint entries are not JSON") from err
            (Path(save_directory) / STATE_FILE).write_text(text)

    @classmethod
    def _from_pretrained(
        cls,
        *,
        model_id: str,
        revision: str | None,
        cache_dir: str | Path | None,
        force_download: bool,
        local_files_only: bool,
        token: str | bool | None,
        map_location: str = "cpu",
        strict: bool = True,
        **model_kwargs: Any,
    ):
        from safetensors import SafetensorError
        from safetensors.torch import load_model

        download = dict(revision=revision, cache_dir=cache_dir, force_download=force_download,
                        local_files_only=local_files_only, token=token)  # fmt: skip
        _file(model_id, constants.CONFIG_NAME, True, **download)
        weights = _file(model_id, constants.SAFETENSORS_SINGLE_FILE, True, **download)
        state_file = _file(model_id, STATE_FILE, False, **download)
        model = cls(**model_kwargs)
        model.on_load_checkpoint({} if state_file is None else json.loads(state_file.read_text()))
        try:
            load_model(model, str(weights), strict=strict, device=str(map_location))
        except SafetensorError as err:
            raise ValueError(f"{weights}: not a readable safetensors file ({err})") from err
        model.mark_loaded()
        return model.eval()


def is_hub_folder(path: str | Path | None) -> bool:
    """Whether ``path`` is a folder written by ``save_pretrained`` (``config.json`` and
    ``model.safetensors``)."""
    if path is None or not Path(path).is_dir():
        return False
    folder = Path(path)
    return (folder / constants.CONFIG_NAME).is_file() and (
        folder / constants.SAFETENSORS_SINGLE_FILE
    ).is_file()


def load_module(cls: type, ckpt: str | None, weights: str | None, device: Any):
    """A plug-in's module: from a Lightning checkpoint (``ckpt``), from a ``save_pretrained``
    folder (``weights``), or ``None`` when neither applies."""
    if ckpt is not None:
        return cls.load_from_checkpoint(ckpt, map_location=device)
    if is_hub_folder(weights):
        return cls.from_pretrained(weights, map_location=str(device))
    return None
