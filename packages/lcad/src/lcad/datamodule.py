"""``LCADDataModule``: the shared :class:`ColorizationDataModule` with the paper's defaults.

L-CAD (Chang et al., NeurIPS 2023, §3.5, §4) trains at 256x256 with batch 8 on the extended
COCO-Stuff and multi-instance captions. The core reads the authors' release format, a JSON
object ``{"file.jpg": [caption, ...]}`` (``caption_format: name-to-captions``, one caption
drawn per sample and epoch), as well as COCO caption annotations, JSON lines and the L-CoIns
release's name-caption pairs; CapShapes scenes carry their description level (complete,
partial, scarce), which any-level training reads.
"""

from __future__ import annotations

from chromalab.data import ColorizationDataModule

__all__ = ["LCADDataModule"]


class LCADDataModule(ColorizationDataModule):
    """:class:`ColorizationDataModule` with ``image_size=256`` and ``batch_size=8`` (§3.5).
    Every argument of the parent is accepted; only the defaults differ."""

    def __init__(self, *args, image_size: int = 256, batch_size: int = 8, **kwargs):
        super().__init__(*args, image_size=image_size, batch_size=batch_size, **kwargs)
