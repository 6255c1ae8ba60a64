"""``CICDataModule``: the shared :class:`ColorizationDataModule` with CIC's defaults.

CIC trains on colour photos only (no captions): 176x176 random crops, batch 40 (the authors'
release), near-grey images filtered out.
"""

from __future__ import annotations

from chromalab.data import ColorizationDataModule

__all__ = ["CICDataModule"]


class CICDataModule(ColorizationDataModule):
    """:class:`ColorizationDataModule` with ``image_size=176`` and ``batch_size=40``.

    Every argument of the parent is accepted (see its documentation); only the defaults
    differ.
    """

    def __init__(self, *args, image_size: int = 176, batch_size: int = 40, **kwargs):
        super().__init__(*args, image_size=image_size, batch_size=batch_size, **kwargs)
