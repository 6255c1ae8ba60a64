"""Tiny cic components for CPU tests, one factory per kind (the diffusers
``get_dummy_components`` habit): tests change only what they are about."""

from __future__ import annotations

from typing import Any

from cic.cli import CONFIGS
from cic.networks import CICNetwork

#: the tiny CLI config (32x32 scenes, a width-1/8 network, 2 steps)
TINY_CONFIG = str(CONFIGS / "tiny.yaml")
#: width 1/8: 8-64 channels
WIDTH = 0.125


def tiny_network(num_classes: int = 25, **overrides: Any) -> CICNetwork:
    """A :class:`CICNetwork` of width :data:`WIDTH` over ``num_classes`` bins."""
    return CICNetwork(num_classes=num_classes, **{"width": WIDTH, **overrides})
