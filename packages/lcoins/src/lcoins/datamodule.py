"""``LCoInsDataModule``: the shared :class:`ColorizationDataModule` with the paper's defaults.

L-CoIns (Chang et al., CVPR 2023, §4-5) trains on the extended COCO-Stuff captions and on its
multi-instance dataset at 224x224 with batch 64. Both come as caption files that the core
reads (``source: captions``, ``caption_format: auto``): the authors' release format, a JSON
list of ``[file, caption]`` pairs (``caption_format: name-caption-pairs``,
:func:`chromalab.data.records.load_name_caption_pairs`), COCO
caption annotations and JSON lines. Horizontal flips stay off for captioned sources ("on the
left" must keep its meaning).
"""

from __future__ import annotations

from chromalab.data import ColorizationDataModule

__all__ = ["LCoInsDataModule"]


class LCoInsDataModule(ColorizationDataModule):
    """:class:`ColorizationDataModule` with ``image_size=224`` and ``batch_size=64`` (§5).

    Every argument of the parent is accepted (see its documentation); only the defaults
    differ. Batches carry ``rgb`` (for the luminance augmentation), ``l``, ``ab`` and
    ``caption``.
    """

    def __init__(self, *args, image_size: int = 224, batch_size: int = 64, **kwargs):
        super().__init__(*args, image_size=image_size, batch_size=batch_size, **kwargs)
