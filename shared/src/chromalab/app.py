"""``chromalab app``: try any installed model in the browser (gradio; ``pip install
./shared[app]``).

::

    chromalab app                                             # pick model and weights in the page
    chromalab app --model film_color --weights benchmarks/weights/capshapes-film-v1
    chromalab app --host 0.0.0.0 --port 7860                  # serve to the network

Upload one or more photos (colour photos are turned grey first), choose a model and its
checkpoint (``fit``'s ``.ckpt``) or weights (a ``save_pretrained`` folder or a released file),
type a caption for the language models (and set the model's own controls, such as a diffusion
model's sampling steps), and see, per photo, the grey input, the result and the model's own
explanation (FiLM activation maps, L-CoIns' group assignment, L-CAD's attention per colour word)
side by side; download the results as PNG. The page calls the same :mod:`chromalab.models`
plug-ins and :func:`chromalab.inference.colorize` as the command line, with the same caption
rules. An unreadable upload is reported in the page and skipped; the app keeps serving.

What is model-specific is built from the models' schemas
(:class:`~chromalab.models.ColorizeOption`): each model's options marked ``app="control"`` are
controls in a "Sampling (model)" panel, shown while that model is selected (a number box for
``int`` and ``float``, a checkbox for ``bool``, a dropdown for options with choices, a text box
for ``str``; each with the option's name as its ``elem_id``), and those marked ``app="flag"``
are flags of ``chromalab app``, passed to the model when it loads.
"""

from __future__ import annotations

import os
import tempfile
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from chromalab.color import rgb_to_lab
from chromalab.inference import clean_caption, colorize
from chromalab.io import ImageLoadError, load_image, recombine, save_image, to_pil
from chromalab.models import (
    ColorizeOption,
    Explainer,
    available_models,
    load_colorizer,
    loadable_model_options,
    model_options,
    resolve_device,
)

__all__ = ["ColorizerCache", "build_app", "main", "page_controls", "run_colorize"]

#: ``elem_id`` of the page's fixed elements (a control named so gets its model's name first).
PAGE_IDS = ("photos", "model", "ckpt", "weights", "caption", "run", "status", "gallery",
            "downloads")  # fmt: skip


def page_controls(model: str) -> tuple[ColorizeOption, ...]:
    """The options of ``model`` that the page shows as controls (``app="control"``)."""
    return tuple(o for o in model_options(model) if o.app == "control")


def _require_gradio():
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # never call home
    try:
        import gradio
    except ImportError as err:
        raise ImportError(
            "chromalab app needs gradio: pip install './shared[app]' (or pip install gradio)"
        ) from err
    return gradio


class ColorizerCache:
    """The last loaded colorizer, kept while the model and its weights stay the same (loading
    is the slow part; the page's controls change without a reload).

    Args:
        device: where models run (``"auto"``/``None``: CUDA if available).
        model_options: per model, its own options given to ``chromalab app`` (its flags), passed
            to that model only when it loads.
        options: common options passed to every model (``progress``, ...).
    """

    def __init__(
        self,
        device: str | None = None,
        model_options: Mapping[str, Mapping[str, Any]] | None = None,
        **options: Any,
    ) -> None:
        self.device = str(resolve_device(device))
        self.options = {k: v for k, v in options.items() if v is not None}
        self.model_options = {
            name: {k: v for k, v in given.items() if v is not None}
            for name, given in (model_options or {}).items()
        }
        self.key: tuple | None = None
        self.model: Any = None
        self.controls: tuple[ColorizeOption, ...] = ()

    def get(self, name: str, ckpt: str | None, weights: str | None) -> Any:
        ckpt, weights = (str(Path(p.strip()).expanduser()) if p and p.strip() else None
                         for p in (ckpt, weights))  # fmt: skip
        key = (name, ckpt, weights)
        if key != self.key:
            self.model, self.key = None, None
            for label, path in (("checkpoint", ckpt), ("weights", weights)):
                if path and not Path(path).exists():
                    raise FileNotFoundError(f"no {label} at {path}")
            options = self.options | self.model_options.get(name, {})
            self.model = load_colorizer(
                name, ckpt=ckpt, weights=weights, device=self.device, **options
            )
            self.controls = page_controls(name)
            self.key = key
        return self.model


def _grey(rgb: torch.Tensor) -> torch.Tensor:
    l = rgb_to_lab(rgb[None])[0, :1]
    return recombine(l, torch.zeros(2, 1, 1))


def run_colorize(
    cache: ColorizerCache,
    files: Sequence[str],
    model: str,
    ckpt: str | None,
    weights: str | None,
    caption: str | None,
    controls: Mapping[str, Any] | None = None,
    out_dir: str | Path | None = None,
) -> tuple[list[tuple[Any, str]], list[str], str]:
    """What one press of *Colorize* does, without gradio (tested on its own): returns the
    gallery ``(image, label)`` items (per photo: grey input, result, explanation maps), the
    written result PNGs and a Markdown status. Unreadable files are listed in the status.

    ``controls``: the page's control values by option name; those of the model's controls
    (:func:`page_controls`) are set on the colorizer, as its attributes, before it runs (others
    and empty ones are ignored) and named in the status.

    Raises:
        ValueError, FileNotFoundError: no photos, no model, weights that do not load, a
            control value of the wrong type, a missing caption for a language model; the page
            shows them in the status.
    """
    if not files:
        raise ValueError("upload one or more photos")
    if not model:
        raise ValueError("choose a model")
    colorizer = cache.get(model, ckpt, weights)
    used = []
    for option in cache.controls:
        value = (controls or {}).get(option.name)
        if value is None or value == "":
            continue
        setattr(colorizer, option.name, option.convert(value))
        used.append(f"{option.name} {getattr(colorizer, option.name)}")
    text = clean_caption(caption, required=colorizer.uses_captions)
    good, names, problems = [], [], []
    for path in files:
        name = Path(path).name
        try:
            good.append(load_image(path))
            names.append(name)
        except ImageLoadError as err:
            problems.append(f"**Could not read {name}**: {err.reason}")
    status = problems[:]
    gallery: list[tuple[Any, str]] = []
    written: list[str] = []
    if good:
        start = time.perf_counter()
        explains = isinstance(colorizer, Explainer)
        results = colorize(good, model=colorizer, caption=text, output="pt", explain=explains,
                           device=cache.device)  # fmt: skip
        seconds = time.perf_counter() - start
        out = Path(out_dir or tempfile.mkdtemp(prefix="chromalab-app-"))
        out.mkdir(parents=True, exist_ok=True)
        for name, rgb, result in zip(names, good, results, strict=True):
            image, maps = result if explains else (result, {})
            stem = Path(name).stem
            gallery += [(to_pil(_grey(rgb)), f"{stem}: input"), (to_pil(image), f"{stem}: result")]
            gallery += [(to_pil(m), f"{stem}: {label}") for label, m in maps.items()]
            written.append(str(save_image(image, out / f"{stem}_colorized.png")))
        plural = "s" if len(good) > 1 else ""
        listed = ", ".join(names)
        options = f" ({', '.join(used)})" if used else ""
        status.insert(0, f"Colorized {len(good)} photo{plural} ({listed}) with {model}{options} "
                         f"in {seconds:.1f} s.")  # fmt: skip
    return gallery, written, "\n\n".join(status)


def _installed_controls(models: Sequence[str]) -> dict[str, tuple[ColorizeOption, ...]]:
    """Per installed model that has some, its page controls; a model whose plug-in does not
    load is left out with a warning (choosing it on the page shows the error)."""
    out = {}
    for name, options in loadable_model_options(models).items():
        controls = tuple(o for o in options if o.app == "control")
        if controls:
            out[name] = controls
    return out


def _control(gr, option: ColorizeOption, elem_id: str):
    """The gradio component of a control, by the option's type."""
    common = {"label": option.name.replace("_", " ").capitalize(), "info": option.help,
              "elem_id": elem_id}  # fmt: skip
    if option.choices is not None:
        return gr.Dropdown(list(option.choices), value=option.default, **common)
    if option.type is bool:
        return gr.Checkbox(value=bool(option.default), **common)
    if option.type is int:
        return gr.Number(option.default, precision=0, minimum=option.minimum, **common)
    if option.type is float:
        return gr.Number(option.default, minimum=option.minimum, **common)
    return gr.Textbox(option.default or "", **common)


def _panel_visibility(gr, owners: list[str]):
    """The handler that shows the control panel of the chosen model only (``owners``: each
    panel's model; gradio takes a single output's value unwrapped)."""

    def show(chosen: str):
        updates = [gr.update(visible=owner == chosen) for owner in owners]
        return updates if len(updates) > 1 else updates[0]

    return show


def build_app(
    model: str | None = None,
    ckpt: str | None = None,
    weights: str | None = None,
    device: str | None = None,
    model_options: Mapping[str, Mapping[str, Any]] | None = None,
):
    """The gradio ``Blocks`` of the app; ``model``, ``ckpt``, ``weights`` fill the page's
    fields; ``model_options``: per model, its own options (``chromalab app``'s flags), passed to
    it when it loads."""
    gr = _require_gradio()
    # progress: models with long work (a diffusion model's sampling steps) show tqdm bars,
    # which the page mirrors (track_tqdm)
    cache = ColorizerCache(device, model_options, progress=True)
    models = available_models()
    if model is not None and model not in models:
        raise ValueError(f"unknown model {model!r}; installed models: {', '.join(models)}")
    selected = model or (models[0] if models else None)
    schema = _installed_controls(models)
    controls: dict[str, list[tuple[ColorizeOption, Any]]] = {}  # per model
    panels: dict[str, Any] = {}

    def press(data, progress=gr.Progress(track_tqdm=True)):  # noqa: B008 (gradio's idiom)
        files, name = data[files_box], data[name_box]
        paths = [f if isinstance(f, str) else f.name for f in (files or [])]
        values = {option.name: data[box] for option, box in controls.get(name, [])}
        try:
            gallery, written, status = run_colorize(
                cache, paths, name, data[ckpt_box], data[weights_box], data[caption_box], values
            )
        except (ValueError, FileNotFoundError, ImportError) as err:  # shown where results go
            return [], None, f"**Error:** {err}"
        per_photo = Counter(label.split(": ", 1)[0] for _, label in gallery)
        columns = max(per_photo.values(), default=3)  # one row per photo: input, result, maps
        return gr.Gallery(value=gallery, columns=columns), written, status

    with gr.Blocks(title="chromalab", analytics_enabled=False) as app:
        gr.Markdown(
            "# chromalab\nColorize black-and-white photos with an installed model. Colour "
            "photos are turned grey first. Paths are on the machine that runs the app."
        )
        with gr.Row():
            with gr.Column():
                files_box = gr.File(label="Photos", file_count="multiple", elem_id="photos")
                name_box = gr.Dropdown(models, value=selected, label="Model", elem_id="model")
                ckpt_box = gr.Textbox(ckpt or "", label="Checkpoint (.ckpt of fit)",
                                      elem_id="ckpt")  # fmt: skip
                weights_box = gr.Textbox(
                    weights or "", label="Weights (save_pretrained folder or released file)",
                    elem_id="weights",
                )  # fmt: skip
                caption_box = gr.Textbox(
                    label="Caption (language models)", elem_id="caption",
                    placeholder="a red car in front of a white house",
                )  # fmt: skip
                used_ids = set(PAGE_IDS)
                for name, options in schema.items():
                    with gr.Accordion(f"Sampling ({name})", open=False,
                                      visible=name == selected) as panels[name]:  # fmt: skip
                        for option in options:
                            elem_id = option.name
                            if elem_id in used_ids:  # shared with another model
                                elem_id = f"{name}-{option.name}"
                            used_ids.add(elem_id)
                            controls.setdefault(name, []).append(
                                (option, _control(gr, option, elem_id))
                            )
                button = gr.Button("Colorize", variant="primary", elem_id="run")
            with gr.Column():
                status = gr.Markdown(elem_id="status")
                gallery = gr.Gallery(
                    label="Input, result and the model's explanation", columns=3, format="png",
                    object_fit="contain", elem_id="gallery",
                )  # fmt: skip
                downloads = gr.File(
                    label="Results (PNG)", file_count="multiple", elem_id="downloads"
                )
        inputs = {files_box, name_box, ckpt_box, weights_box, caption_box}
        inputs |= {box for boxes in controls.values() for _, box in boxes}
        button.click(press, inputs, [gallery, downloads, status])
        if panels:  # each model's controls while it is selected
            name_box.change(_panel_visibility(gr, list(panels)), name_box, list(panels.values()))
    return app


def main(
    model: str | None = None,
    ckpt: str | None = None,
    weights: str | None = None,
    device: str | None = None,
    host: str = "127.0.0.1",
    port: int = 7860,
    model_options: Mapping[str, Mapping[str, Any]] | None = None,
) -> None:
    """Serve the app until interrupted (``chromalab app``); ``model_options``: per model, its
    own options (:func:`build_app`)."""
    app = build_app(model, ckpt, weights, device, model_options)
    print(f"chromalab app on http://{host}:{port}", flush=True)
    app.queue(default_concurrency_limit=1).launch(
        server_name=host, server_port=port, ssr_mode=False, show_error=True, quiet=True
    )
