"""Hub-style weights for every paper module: a folder (or a Hugging Face Hub repository) with
``config.json`` (the module's constructor arguments) and ``model.safetensors`` (its tensors),
through ``huggingface_hub``'s :class:`~huggingface_hub.PyTorchModelHubMixin`::

    module.save_pretrained("capshapes-cic")              # config.json + model.safetensors
    CICModule.from_pretrained("capshapes-cic")           # a local folder (or a repo id)

Nothing in these files is executed: JSON and safetensors only, no pickle. Loading is strict:
missing or unexpected tensors, a missing file or an unreadable safetensors file are errors that
name them. State that is not a tensor nor a constructor argument (film_color's caption
vocabulary) is what the module's ``on_save_checkpoint`` writes, kept as JSON in
``chromalab_state.json`` and given back to its ``on_load_checkpoint``. Frozen pretrained parts
that a module loads from their own source (lcoins' MiniLM text encoder, from its package) are
kept out of ``model.safetensors`` (:meth:`HubMixin.external_parts`): the folder holds what was
trained, ``config.json`` names the rest, and loading reads those parts from their source before
the folder's tensors, still strictly. A loaded module is marked
restored (:meth:`chromalab.tasks.ColorizationTask.mark_loaded`): a later ``fit`` does not reload
its pretrained parts or ``init_from`` over it.
"""

from __future__ import annotations

import json
from collections.abc import Callable
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

    def external_parts(self) -> dict[str, Callable[[], None]]:
        """Frozen pretrained parts kept out of ``model.safetensors``: state-dict key prefix ->
        the function that loads that part from its own source. None by default; a module whose
        ``config.json`` names such a part (and which keeps it frozen) lists it here."""
        return {}

    def _save_pretrained(self, save_directory: Path) -> None:
        external = tuple(self.external_parts())
        if external:
            from safetensors.torch import save_file

            tensors = {
                name: tensor.detach().contiguous().clone()  # clone: no shared storage in the file
                for name, tensor in self.state_dict().items()
                if not name.startswith(external)
            }
            save_file(tensors, str(Path(save_directory) / constants.SAFETENSORS_SINGLE_FILE),
                      metadata={"format": "pt"})  # fmt: skip
        else:
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
        external = model.external_parts()
        try:
            if external:
                _load_with_external_parts(model, weights, external, strict, str(map_location))
            else:
                load_model(model, str(weights), strict=strict, device=str(map_location))
        except SafetensorError as err:
            raise ValueError(f"{weights}: not a readable safetensors file ({err})") from err
        model.mark_loaded()
        return model.eval()


def _load_with_external_parts(
    model: Any, weights: Path, external: dict[str, Callable[[], None]], strict: bool, device: str
) -> None:
    """Load ``model``'s external parts from their sources, then the folder's tensors: with
    ``strict``, every other tensor of the model must be in the file and nothing else."""
    from safetensors.torch import load_file

    tensors = load_file(str(weights), device=device)
    prefixes = tuple(external)
    expected = {name for name in model.state_dict() if not name.startswith(prefixes)}
    missing, unexpected = sorted(expected - tensors.keys()), sorted(tensors.keys() - expected)
    if strict and (missing or unexpected):
        raise RuntimeError(
            f"{weights} does not match {type(model).__name__}: missing {missing}, unexpected "
            f"{unexpected} (parts loaded from their own source: {list(prefixes)})"
        )
    for load in external.values():
        load()
    model.load_state_dict({k: v for k, v in tensors.items() if k in expected}, strict=False)


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
