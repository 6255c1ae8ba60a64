"""``chromalab app``: try any installed model in the browser (gradio; ``pip install
./shared[app]``).

::

    chromalab app                                             # pick model and weights in the page
    chromalab app --model film_color --weights benchmarks/weights/capshapes-film-v1
    chromalab app --host 0.0.0.0 --port 7860                  # serve to the network

Upload one or more photos (colour photos are turned grey first), choose a model and its
checkpoint (``fit``'s ``.ckpt``) or weights (a ``save_pretrained`` folder or a released file),
type a caption for the language models (and the sampling options for ``lcad``), and see, per
photo, the grey input, the result and the model's own explanation (FiLM activation maps,
L-CoIns' group assignment, L-CAD's attention per colour word) side by side; download the
results as PNG. The page calls the same :mod:`chromalab.models` plug-ins and
:func:`chromalab.inference.colorize` as the command line, with the same caption rules. An
unreadable upload is reported in the page and skipped; the app keeps serving.
"""

from __future__ import annotations

import os
import tempfile
import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from chromalab.color import rgb_to_lab
from chromalab.inference import clean_caption, colorize
from chromalab.io import ImageLoadError, load_image, recombine, save_image, to_pil
from chromalab.models import Explainer, available_models, load_colorizer, resolve_device

__all__ = ["SAMPLING_OPTIONS", "ColorizerCache", "build_app", "main", "run_colorize"]

#: Sampling options the page sets on a colorizer that has them as attributes (``lcad``).
SAMPLING_OPTIONS = ("steps", "guidance", "seed")


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
    is the slow part; sampling options change without a reload)."""

    def __init__(self, device: str | None = None, **options: Any) -> None:
        self.device = str(resolve_device(device))
        self.options = {k: v for k, v in options.items() if v is not None}
        self.key: tuple | None = None
        self.model: Any = None

    def get(self, name: str, ckpt: str | None, weights: str | None) -> Any:
        ckpt, weights = (str(Path(p.strip()).expanduser()) if p and p.strip() else None
                         for p in (ckpt, weights))  # fmt: skip
        key = (name, ckpt, weights)
        if key != self.key:
            self.model, self.key = None, None
            for label, path in (("checkpoint", ckpt), ("weights", weights)):
                if path and not Path(path).exists():
                    raise FileNotFoundError(f"no {label} at {path}")
            self.model = load_colorizer(
                name, ckpt=ckpt, weights=weights, device=self.device, **self.options
            )
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
    sampling: dict[str, Any] | None = None,
    out_dir: str | Path | None = None,
) -> tuple[list[tuple[Any, str]], list[str], str]:
    """What one press of *Colorize* does, without gradio (tested on its own): returns the
    gallery ``(image, label)`` items (per photo: grey input, result, explanation maps), the
    written result PNGs and a Markdown status. Unreadable files are listed in the status.

    Raises:
        ValueError, FileNotFoundError: no photos, no model, weights that do not load, a
            missing caption for a language model; the page shows them in the status.
    """
    if not files:
        raise ValueError("upload one or more photos")
    if not model:
        raise ValueError("choose a model")
    colorizer = cache.get(model, ckpt, weights)
    used = []
    for name, value in (sampling or {}).items():
        if value is not None and name in SAMPLING_OPTIONS and hasattr(colorizer, name):
            setattr(colorizer, name, type(getattr(colorizer, name))(value))
            used.append(f"{name} {getattr(colorizer, name)}")
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


def build_app(
    model: str | None = None,
    ckpt: str | None = None,
    weights: str | None = None,
    device: str | None = None,
    **options: Any,
):
    """The gradio ``Blocks`` of the app; ``model``, ``ckpt``, ``weights`` fill the page's
    fields; ``options`` (``text_encoder``, ``sam``, ``scheduler``, ...) go to every model
    loaded."""
    gr = _require_gradio()
    # progress: models with long work (lcad's sampling steps) show tqdm bars, which the page
    # mirrors (track_tqdm)
    cache = ColorizerCache(device, progress=True, **options)
    models = available_models()
    if model is not None and model not in models:
        raise ValueError(f"unknown model {model!r}; installed models: {', '.join(models)}")

    def press(
        files, name, ckpt_path, weights_path, caption, steps, guidance, seed,
        progress=gr.Progress(track_tqdm=True),  # noqa: B008 (gradio's idiom)
    ):  # fmt: skip
        paths = [f if isinstance(f, str) else f.name for f in (files or [])]
        sampling = {"steps": steps, "guidance": guidance, "seed": seed}
        try:
            gallery, written, status = run_colorize(
                cache, paths, name, ckpt_path, weights_path, caption, sampling
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
                files = gr.File(label="Photos", file_count="multiple", elem_id="photos")
                name = gr.Dropdown(models, value=model or (models[0] if models else None),
                                   label="Model", elem_id="model")  # fmt: skip
                ckpt_box = gr.Textbox(ckpt or "", label="Checkpoint (.ckpt of fit)",
                                      elem_id="ckpt")  # fmt: skip
                weights_box = gr.Textbox(
                    weights or "", label="Weights (save_pretrained folder or released file)",
                    elem_id="weights",
                )  # fmt: skip
                caption = gr.Textbox(label="Caption (language models)", elem_id="caption",
                                     placeholder="a red car in front of a white house")  # fmt: skip
                with gr.Accordion("Sampling (lcad)", open=False):
                    steps = gr.Slider(1, 200, value=50, step=1, label="Steps", elem_id="steps")
                    guidance = gr.Number(5.0, label="Guidance scale", elem_id="guidance")
                    seed = gr.Number(0, precision=0, label="Seed", elem_id="seed")
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
        button.click(
            press,
            [files, name, ckpt_box, weights_box, caption, steps, guidance, seed],
            [gallery, downloads, status],
        )
    return app


def main(
    model: str | None = None,
    ckpt: str | None = None,
    weights: str | None = None,
    device: str | None = None,
    host: str = "127.0.0.1",
    port: int = 7860,
    **options: Any,
) -> None:
    """Serve the app until interrupted (``chromalab app``)."""
    app = build_app(model, ckpt, weights, device, **options)
    print(f"chromalab app on http://{host}:{port}", flush=True)
    app.queue(default_concurrency_limit=1).launch(
        server_name=host, server_port=port, ssr_mode=False, show_error=True, quiet=True
    )
