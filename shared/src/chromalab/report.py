"""HTML reports that people can look at: image grids and metric tables.

:class:`Report` keeps one folder (``outputs/demo`` for ``make demo``) in which every package
writes its own *section* (``sections/<order>-<name>.html``) and its images; :meth:`Report.build`
assembles all sections, in order, into ``index.html``. A package re-running its demo replaces
only its own section, so packages add to one report without knowing about each other.
"""

from __future__ import annotations

import html
import math
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path

import torch
import torchvision.utils
from torch import Tensor

__all__ = ["Report", "heatmap", "image_grid", "metrics_table", "unit_range"]

# Colour ramp of the heatmaps: dark blue, blue, cyan, yellow, red (positions 0, .25, .5, .75, 1).
_RAMP = torch.tensor(
    [[0.0, 0.0, 0.5], [0.0, 0.3, 1.0], [0.0, 0.9, 0.9], [1.0, 0.9, 0.0], [0.8, 0.0, 0.0]]
)

_STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1200px; color: #222; }
h1 { border-bottom: 2px solid #444; } h2 { margin-top: 2em; border-bottom: 1px solid #aaa; }
table { border-collapse: collapse; margin: 1em 0; }
td, th { border: 1px solid #ccc; padding: 4px 10px; text-align: right; }
th { background: #f2f2f2; } td:first-child, th:first-child { text-align: left; }
img { image-rendering: pixelated; max-width: 100%; border: 1px solid #ddd; }
figure { margin: 1em 0; } figcaption { color: #555; font-size: 0.9em; }
code { background: #f4f4f4; padding: 1px 4px; }
"""


def unit_range(maps: Tensor) -> Tensor:
    """Each map (the last two dimensions) scaled to ``[0, 1]``: its minimum to 0, its maximum
    to 1; a constant map gives zeros."""
    low = maps.amin(dim=(-2, -1), keepdim=True)
    span = maps.amax(dim=(-2, -1), keepdim=True) - low
    return torch.where(span > 0, (maps - low) / span.clamp_min(1e-12), 0.0)


def heatmap(maps: Tensor) -> Tensor:
    """Colour ``maps`` ``(B, h, w)`` in ``[0, 1]`` with a blue-cyan-yellow-red ramp.

    Returns:
        RGB ``(B, 3, h, w)`` in ``[0, 1]``: 0 is dark blue, 1 is dark red.
    """
    if maps.dim() != 3:
        raise ValueError(f"maps must have shape (B, h, w), got {tuple(maps.shape)}")
    ramp = _RAMP.to(maps.device)
    x = maps.clamp(0, 1) * (len(ramp) - 1)
    low = x.floor().long().clamp(max=len(ramp) - 2)
    frac = (x - low).unsqueeze(-1)
    rgb = ramp[low] * (1 - frac) + ramp[low + 1] * frac  # (B, h, w, 3)
    return rgb.permute(0, 3, 1, 2)


def image_grid(
    images: Tensor | Sequence[Tensor], path: str | Path, nrow: int, scale: int = 1
) -> Path:
    """Save images ``(N, 3, H, W)`` in ``[0, 1]`` as one PNG grid, ``nrow`` images per row.

    Images of different sizes are resized to the first one's size. ``scale`` enlarges small
    images (nearest neighbour) so that 64x64 scenes stay visible.
    """
    if not isinstance(images, Tensor):
        first = images[0]
        images = torch.stack(
            [
                img
                if img.shape[1:] == first.shape[1:]
                else torch.nn.functional.interpolate(
                    img[None], size=first.shape[1:], mode="bilinear", antialias=True
                )[0]
                for img in images
            ]
        )
    if images.dim() != 4 or images.shape[1] not in (1, 3):
        raise ValueError(f"images must have shape (N, 3, H, W), got {tuple(images.shape)}")
    images = images.detach().float().cpu().clamp(0, 1)
    if scale > 1:
        images = images.repeat_interleave(scale, dim=2).repeat_interleave(scale, dim=3)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    torchvision.utils.save_image(images, path, nrow=nrow, padding=2, pad_value=1.0)
    return path


def _format(value: object) -> str:
    if isinstance(value, Tensor):
        value = value.item() if value.numel() == 1 else value.tolist()
    if isinstance(value, float):
        if math.isnan(value):
            return "—"
        return f"{value:.4g}"
    return html.escape(str(value))


def metrics_table(
    rows: Sequence[Mapping[str, object]], columns: Sequence[str] | None = None
) -> str:
    """An HTML table of ``rows`` (dicts); ``columns`` fixes the order (default: first row's)."""
    if not rows:
        return "<p><em>no results</em></p>"
    columns = list(columns or rows[0])
    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in columns)
    body = "".join(
        "<tr>" + "".join(f"<td>{_format(row.get(c, ''))}</td>" for c in columns) + "</tr>"
        for row in rows
    )
    return f"<table><tr>{head}</tr>{body}</table>"


class Report:
    """A folder of sections assembled into ``index.html``.

    Args:
        root: the report folder, e.g. ``outputs/demo``.
        title: page title.
    """

    def __init__(self, root: str | Path, title: str = "chromalab demo"):
        self.root = Path(root)
        self.title = title
        (self.root / "sections").mkdir(parents=True, exist_ok=True)

    def asset(self, name: str) -> Path:
        """Path for an image or file of the report (relative links work from index.html)."""
        path = self.root / "assets" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        return path

    def relative(self, path: Path) -> str:
        return Path(path).resolve().relative_to(self.root.resolve()).as_posix()

    def figure(self, path: Path, caption: str) -> str:
        """HTML for an image of the report with a caption."""
        return (
            f'<figure><img src="{html.escape(self.relative(path))}">'
            f"<figcaption>{html.escape(caption)}</figcaption></figure>"
        )

    def write_section(self, name: str, title: str, body: str, order: int = 50) -> Path:
        """Write (or replace) section ``name``; sections are shown by ``order``, then name."""
        for old in (self.root / "sections").glob(f"*-{name}.html"):
            old.unlink()
        path = self.root / "sections" / f"{order:03d}-{name}.html"
        header = f'<section id="{html.escape(name)}"><h2>{html.escape(title)}</h2>'
        path.write_text(f"{header}\n{body}\n</section>\n")
        return path

    def build(self) -> Path:
        """Assemble every section into ``index.html``; returns its path."""
        sections = sorted((self.root / "sections").glob("*.html"))
        stamp = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
        parts = [
            '<!doctype html><html><head><meta charset="utf-8">',
            f"<title>{html.escape(self.title)}</title><style>{_STYLE}</style></head><body>",
            f"<h1>{html.escape(self.title)}</h1><p>Built {stamp}.</p>",
            *(s.read_text() for s in sections),
            "</body></html>",
        ]
        index = self.root / "index.html"
        index.write_text("\n".join(parts))
        return index
