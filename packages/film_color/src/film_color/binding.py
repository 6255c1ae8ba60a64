"""Caption binding targets: which colour a CapShapes caption gives each named object.

Optional training signal, not in the paper (``binding_loss_weight`` of
:class:`film_color.module.FilmColorModule`). The linear probes of
``benchmarks/film_table1_probes.py`` show that FILM's caption encoding ``h`` tells the colour of a
shape named once for most captions but the colour of one of two objects sharing a noun ("the left
circle is red and the right circle is blue") for only about 70%, although an encoder of the same
size trained on that question alone answers it for about 95%: the colorization loss does not teach
the binding. The auxiliary loss asks a linear readout of ``h`` the questions of that probe, for
every shape: the colour of the shape when the caption names it once, and the colours of the
first (left or top) and second (right or bottom) object when two share it.

The targets are read from the caption text alone, in the grammar of
:func:`chromalab.text.describe_scene` (``"a red circle on the left"``, ``"the left circle is
red"``, ``"the circle is red"``); captions in other words (COCO) give no target.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import torch
from torch import Tensor

from chromalab.data.capshapes import SHAPES
from chromalab.text import CHROMATIC_COLORS, COLOR_LEXICON

__all__ = ["BINDING_SLOTS", "COLOURS", "binding_targets"]

#: per shape: named once, first (left/top) of two, second (right/bottom) of two
BINDING_SLOTS = ("own", "first", "second")
#: the colour words a target can hold, in class order
COLOURS: tuple[str, ...] = tuple(COLOR_LEXICON[c].name for c in CHROMATIC_COLORS)

_COLOUR = "|".join(COLOURS)
_NOUN = "|".join(SHAPES)
_SHAPE_OF_NOUN = {name: s for s, name in enumerate(SHAPES)}
_CLASS_OF_COLOUR = {name: c for c, name in enumerate(COLOURS)}
#: slot of the position words of both grammars ("on the left", "the left circle")
_SLOT_OF_POSITION = {
    None: 0,
    **dict.fromkeys(("left", "top", "on the left", "at the top"), 1),
    **dict.fromkeys(("right", "bottom", "on the right", "at the bottom"), 2),
}
_ATTRIBUTIVE = re.compile(
    rf"\b(?P<colour>{_COLOUR}) (?P<noun>{_NOUN})\b"
    r"(?: (?P<position>on the left|on the right|at the top|at the bottom)\b)?"
)
_PREDICATIVE = re.compile(
    rf"\bthe (?:(?P<position>left|right|top|bottom) )?(?P<noun>{_NOUN}) is (?P<colour>{_COLOUR})\b"
)


def binding_targets(captions: Sequence[str]) -> Tensor:
    """``(B, len(SHAPES), 3)`` long colour classes (index into :data:`COLOURS`), -1 where the
    caption does not say: ``[..., 0]`` the shape named once, ``[..., 1]`` / ``[..., 2]`` the
    first (left/top) / second (right/bottom) of two objects of that shape."""
    targets = torch.full((len(captions), len(SHAPES), len(BINDING_SLOTS)), -1, dtype=torch.long)
    for row, caption in enumerate(captions):
        text = caption.lower()
        for pattern in (_ATTRIBUTIVE, _PREDICATIVE):
            for match in pattern.finditer(text):
                slot = _SLOT_OF_POSITION[match["position"]]
                shape, colour = _SHAPE_OF_NOUN[match["noun"]], _CLASS_OF_COLOUR[match["colour"]]
                targets[row, shape, slot] = colour
    return targets
