"""``FilmColorDataModule``: the shared :class:`ColorizationDataModule` with the paper's defaults.

Manjunatha et al. (2018) train on the 82,783 MSCOCO train2014 images with their five captions
(§3.1) at 224x224, predicting at 56x56 (footnote 2). With ``source="captions"`` and a COCO
captions file, :class:`chromalab.data.CaptionedImageDataset` draws one of an image's captions
per step (from the ``(seed, epoch, index)`` generator); evaluation uses the first caption.
Horizontal flips stay off for captioned sources ("on the left" must keep its meaning).
"""

from __future__ import annotations

from chromalab.data import ColorizationDataModule

__all__ = ["FilmColorDataModule"]


class FilmColorDataModule(ColorizationDataModule):
    """:class:`ColorizationDataModule` with ``image_size=224`` and ``batch_size=32``.

    Every argument of the parent is accepted (see its documentation); only the defaults
    differ. The network's output is 1/4 of ``image_size`` (56 for 224).
    """

    def __init__(self, *args, image_size: int = 224, batch_size: int = 32, **kwargs):
        super().__init__(*args, image_size=image_size, batch_size=batch_size, **kwargs)
