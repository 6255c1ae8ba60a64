"""Object masks for instance-aware sampling (L-CAD §3.4) from Segment Anything.

Kirillov et al., "Segment Anything", ICCV 2023 (arXiv:2304.02643); the ``segment-anything``
package's :class:`~segment_anything.SamPredictor`.

The paper estimates the contours of the objects a description mentions with a referring
segmentation model; the authors' release runs SAM's automatic mask generator offline and picks
masks by file name. Here a :class:`SamSegmenter` turns prompts into one mask per phrase:

* a point ``(x, y)`` or several (``[(x, y), ...]``), or a box ``(x0, y0, x1, y1)``, in pixels of
  the image being colorized;
* automatically (beyond the release): :class:`lcad.pipeline.LCADPipeline` with
  ``auto_masks=True`` reads each colour word's cross-attention peak at the first sampling step
  and uses it as the point prompt.

SAM sees the grey image (as RGB); of its three candidate masks the best-scored one is kept.
Checkpoints load from local files only (``sam_model_registry``; the model type is read off the
weights).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

__all__ = ["SamSegmenter", "sam_model_type"]

#: Width of the image encoder's embedding per SAM model type.
_WIDTHS = {768: "vit_b", 1024: "vit_l", 1280: "vit_h"}

Prompt = Sequence[float] | Sequence[Sequence[float]]


def sam_model_type(state: Mapping[str, Tensor]) -> str:
    """``"vit_b"``, ``"vit_l"`` or ``"vit_h"`` from a SAM state dict."""
    key = "image_encoder.pos_embed"
    if key not in state:
        raise ValueError(f"not a Segment Anything checkpoint: no {key!r}")
    width = int(state[key].shape[-1])
    if width not in _WIDTHS:
        raise ValueError(f"no SAM model type has an image embedding of width {width}")
    return _WIDTHS[width]


def _grey_rgb(l: Tensor) -> np.ndarray:
    """``(H, W, 3)`` uint8 grey image of lightness ``l`` ``(1, H, W)`` or ``(H, W)``."""
    from chromalab.io import recombine

    l = l.detach().float().cpu().reshape(1, *l.shape[-2:])
    rgb = recombine(l, torch.zeros(2, 1, 1))
    return (rgb.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)


class SamSegmenter:
    """One mask per phrase from SAM prompts.

    Args:
        sam: a ``segment_anything`` ``Sam`` model (e.g. from :meth:`from_checkpoint`).
    """

    def __init__(self, sam: Any) -> None:
        from segment_anything import SamPredictor

        self.predictor = SamPredictor(sam.eval())

    @classmethod
    def from_checkpoint(
        cls, path: str | Path, model_type: str = "auto", device: str | torch.device = "cpu"
    ) -> SamSegmenter:
        """SAM from a local checkpoint (``sam_vit_h_4b8939.pth`` and the like); ``model_type``
        ``"auto"`` reads it off the weights."""
        from segment_anything import sam_model_registry

        path = Path(path).expanduser()
        if not path.is_file():
            raise FileNotFoundError(f"no SAM checkpoint at {path} (weights are never downloaded)")
        state = torch.load(path, map_location="cpu", weights_only=True)
        kind = sam_model_type(state) if model_type == "auto" else model_type
        if kind not in sam_model_registry or kind == "default":
            raise ValueError(f"unknown SAM model type {kind!r}; choose vit_b, vit_l or vit_h")
        sam = sam_model_registry[kind]()
        sam.load_state_dict(state)
        return cls(sam.to(device))

    @torch.no_grad()
    def __call__(self, l: Tensor, prompts: Mapping[str, Prompt]) -> dict[str, Tensor]:
        """Masks ``{phrase: bool (H, W)}`` of the grey image of lightness ``l`` ``(1, H, W)``,
        one per prompt (a point, several points, or a box, in pixels)."""
        self.predictor.set_image(_grey_rgb(l))
        out = {}
        for phrase, prompt in prompts.items():
            coords = np.asarray(prompt, dtype=np.float32)
            kwargs: dict[str, Any] = {}
            if coords.shape == (4,):
                kwargs["box"] = coords
            elif coords.shape == (2,) or (coords.ndim == 2 and coords.shape[1] == 2):
                points = coords.reshape(-1, 2)
                kwargs["point_coords"] = points
                kwargs["point_labels"] = np.ones(len(points), dtype=np.int64)
            else:
                raise ValueError(
                    f"prompt of {phrase!r}: a point (x, y), points [(x, y), ...] or a box "
                    f"(x0, y0, x1, y1), got shape {coords.shape}"
                )
            masks, scores, _ = self.predictor.predict(multimask_output=True, **kwargs)
            out[phrase] = torch.from_numpy(masks[int(np.argmax(scores))])
        self.predictor.reset_image()
        return out
