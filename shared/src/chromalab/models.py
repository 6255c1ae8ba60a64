"""Model plug-ins: how paper packages make themselves available to ``chromalab colorize`` and
``chromalab app``.

A paper package declares an entry point in the group ``chromalab.models`` whose object is a
factory::

    [project.entry-points."chromalab.models"]
    cic = "cic.colorizer:load_colorizer"

The factory is called as ``factory(ckpt=..., weights=..., device=..., temperature=...,
progress=...)`` (:data:`COMMON_OPTIONS`; ``None`` for those the user did not give), plus the
options of its own that the user gave, and returns a :class:`Colorizer`.

A plug-in's own options (a diffusion model's sampling steps, say) are declared on the factory
as a schema, a tuple of :class:`ColorizeOption`, with the :func:`with_options` decorator (it
sets the factory's ``options`` attribute)::

    @with_options(
        ColorizeOption("steps", int, 50, "sampling steps (default 50)", app="control"),
        ColorizeOption("sampler", str, "ddim", "sampler", choices=("ddim", "dpm++"), app="flag"),
        ColorizeOption("masks", str, None, "mask folder", metavar="DIR"),
    )
    def load_colorizer(ckpt=None, weights=None, device=None, steps=None, sampler=None,
                       masks=None, **_):
        ...

The core builds everything model-specific from that schema, so it never names a model:
``chromalab colorize --model NAME`` gets one flag per option (``--steps``, ``--sampler``,
``--masks``, in an argument group named for the model; ``--model NAME --help`` lists them) and
passes the values the user gave as keyword arguments; ``chromalab app`` takes the options marked
``app="flag"`` as its own flags and shows a page control for each option marked
``app="control"``, which it sets as the colorizer's attribute of that name before each request;
:func:`load_colorizer` (and :func:`chromalab.colorize`) check keyword options against it.
:func:`model_options` reads a model's schema; a factory without the decorator declares none.

A colorizer with ``uses_source = True`` is also given each image's file and full size
(``colorize(l, captions, source=path, full_size=(H, W))``), for per-image inputs such as
masks. A colorizer that can show how it reads an image also has
``explain(l, captions, **extra) -> (ab, maps)`` (:class:`Explainer`): the app shows those maps
beside the result. Discovery is lazy: nothing is imported until a model is asked for, so a
broken package cannot break the command for the others.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from importlib.metadata import EntryPoint, entry_points
from typing import Any, Literal, Protocol, TypeVar, runtime_checkable

import torch
from torch import Tensor

__all__ = [
    "COMMON_OPTIONS",
    "ENTRY_POINT_GROUP",
    "ColorizeOption",
    "Colorizer",
    "Explainer",
    "OPTION_TYPES",
    "available_models",
    "batch_captions",
    "factory_options",
    "load_colorizer",
    "loadable_model_options",
    "model_options",
    "with_options",
]

ENTRY_POINT_GROUP = "chromalab.models"

logger = logging.getLogger(__name__)

#: The options every factory is called with (``None`` where the user gave none); a plug-in's
#: own options must be named otherwise.
COMMON_OPTIONS = ("ckpt", "weights", "device", "temperature", "progress")

#: The value types an option can have.
OPTION_TYPES = (int, float, str, bool)


@dataclass(frozen=True)
class ColorizeOption:
    """One option of a model plug-in, declared once and offered by ``chromalab colorize``
    (a flag), ``chromalab app`` (a flag or a page control) and :func:`chromalab.colorize` (a
    keyword argument).

    Attributes:
        name: the factory's keyword argument (``"text_encoder"``); a Python identifier.
        type: ``int``, ``float``, ``str`` or ``bool`` (a switch: ``--flag`` gives ``True``).
        default: the value the plug-in uses when the option is not given, shown as the app
            control's first value. The command line passes only the options the user gave, so a
            plug-in may also pick its default from the weights (say so in ``help``).
        help: one line for ``--help`` and the page, naming the default.
        choices: the allowed values (the page shows a dropdown).
        minimum: the smallest value of a number (``1`` for a count of steps).
        flag: the command-line flag; by default ``--`` and the name with dashes
            (``--text-encoder``).
        multiple: a repeatable flag; the value is a list of ``type``.
        metavar: how ``--help`` shows the value (``PHRASE=x,y``).
        app: how ``chromalab app`` offers it: ``"flag"``, an option of the command, given once
            and passed to the factory (a file the model loads); ``"control"``, a control on the
            page, set before each request as the colorizer's attribute ``name`` (no reload:
            sampling settings); ``None``, not at all (per-file inputs of the command line).
    """

    name: str
    type: type
    default: Any = None
    help: str = ""
    choices: tuple[Any, ...] | None = None
    minimum: float | None = None
    flag: str | None = None
    multiple: bool = False
    metavar: str | None = None
    app: Literal["flag", "control"] | None = None

    def __post_init__(self) -> None:
        if not self.name.isidentifier():
            raise ValueError(f"option name must be a Python identifier, got {self.name!r}")
        if self.type not in OPTION_TYPES:
            raise ValueError(
                f"option {self.name}: type must be one of int, float, str, bool, got {self.type!r}"
            )
        if self.app not in (None, "flag", "control"):
            raise ValueError(f"option {self.name}: app must be 'flag', 'control' or None")
        if self.multiple and (self.type is bool or self.app == "control"):
            raise ValueError(
                f"option {self.name}: a repeatable option is neither bool nor a control"
            )
        if self.minimum is not None and self.type not in (int, float):
            raise ValueError(f"option {self.name}: only a number has a minimum")
        if self.choices is not None:
            object.__setattr__(self, "choices", tuple(self._as_type(c) for c in self.choices))
        if not self.cli_flag.startswith("--"):
            raise ValueError(f"option {self.name}: flag must start with '--', got {self.flag!r}")
        if self.default is not None:
            self.convert(self.default)  # a default of the wrong type is the plug-in's bug

    @property
    def cli_flag(self) -> str:
        """The command-line flag (``--text-encoder`` for ``text_encoder``)."""
        return self.flag or "--" + self.name.replace("_", "-")

    def convert(self, value: Any) -> Any:
        """``value`` as this option's type (``None`` stays ``None``; a list for ``multiple``).

        Raises:
            ValueError: a value that is not of the type (``2.5`` for an ``int``, ``"yes"`` for
                a ``bool``), below ``minimum`` or not among ``choices``; the message names the
                option.
        """
        if value is None:
            return None
        if self.multiple:
            values = [value] if isinstance(value, str) else value
            if not isinstance(values, Sequence):
                raise ValueError(f"option {self.name}: expected a list, got {value!r}")
            return [self._check(v) for v in values]
        return self._check(value)

    def _check(self, value: Any) -> Any:
        """One value as this option's type, checked against ``minimum`` and ``choices``."""
        value = self._as_type(value)
        if self.minimum is not None and value < self.minimum:
            raise ValueError(f"option {self.name}: {value!r} is below the minimum {self.minimum}")
        if self.choices is not None and value not in self.choices:
            allowed = ", ".join(map(str, self.choices))
            raise ValueError(f"option {self.name}: {value!r} is not one of {allowed}")
        return value

    def _as_type(self, value: Any) -> Any:
        """One value as this option's type: whole floats are ints, strings of numbers are
        numbers; bools only from bools, strings only from strings."""
        wrong = ValueError(f"option {self.name}: expected {self.type.__name__}, got {value!r}")
        if self.type is bool:
            if not isinstance(value, bool):
                raise wrong
            return value
        if isinstance(value, bool):
            raise wrong
        if self.type is str:
            if not isinstance(value, str):
                raise wrong
            return value
        if self.type is int and isinstance(value, float):
            if not value.is_integer():
                raise wrong
            return int(value)
        try:
            return self.type(value)
        except (TypeError, ValueError):
            raise wrong from None


_Factory = TypeVar("_Factory", bound=Callable[..., Any])


def with_options(*options: ColorizeOption) -> Callable[[_Factory], _Factory]:
    """Declare a factory's own options (the plug-in's schema; module notes): the decorated
    factory gets them as its ``options`` attribute.

    Raises:
        ValueError: two options with one name or flag, or an option named as one of
            :data:`COMMON_OPTIONS`.
    """
    names = [o.name for o in options]
    flags = [o.cli_flag for o in options]
    for kind, items in (("name", names), ("flag", flags)):
        repeated = sorted({x for x in items if items.count(x) > 1})
        if repeated:
            raise ValueError(f"options declared twice (same {kind}): {', '.join(repeated)}")
    common = sorted(set(names) & set(COMMON_OPTIONS))
    if common:
        raise ValueError(f"options {', '.join(common)} are common to every model: rename them")

    def declare(factory: _Factory) -> _Factory:
        factory.options = tuple(options)  # type: ignore[attr-defined]
        return factory

    return declare


@runtime_checkable
class Colorizer(Protocol):
    """What a paper package hands to the umbrella CLI.

    Attributes:
        input_size: side of the square L image the network expects (e.g. 256).
        uses_captions: whether :meth:`colorize` reads ``captions``.
    """

    input_size: int
    uses_captions: bool

    def colorize(self, l: Tensor, captions: list[str] | None = None) -> Tensor:
        """Predict ab for lightness ``l`` ``(B, 1, S, S)`` (L in ``[0, 100]``).

        Returns ``(B, 2, h, w)`` ab at the network's output resolution; the caller upsamples
        and joins it with the full-resolution L.
        """
        ...


@runtime_checkable
class Explainer(Protocol):
    """A :class:`Colorizer` that also shows its own reading of an image: FiLM activation maps,
    L-CoIns' group assignment, L-CAD's cross-attention of each colour word."""

    def explain(
        self, l: Tensor, captions: list[str] | None = None, **extra: object
    ) -> tuple[Tensor, list[dict[str, Tensor]]]:
        """ab as :meth:`Colorizer.colorize` gives it, from the same pass where the model allows,
        and per image ``{label: rgb}``: colour maps ``(3, h, w)`` in ``[0, 1]`` of the square
        input (any ``h = w``), which the caller crops to the image and lays over its grey."""
        ...


def batch_captions(captions: list[str] | None, batch: int, model: str) -> list[str]:
    """The captions of a language model's batch of ``batch`` images: one per image, or one
    given for all.

    Raises:
        ValueError: no caption (the message names ``model``).
    """
    if not captions:
        raise ValueError(f"model {model} colorizes from a caption: pass --caption")
    return list(captions) * batch if len(captions) == 1 else list(captions)


def _entry_points() -> dict[str, EntryPoint]:
    return {ep.name: ep for ep in entry_points(group=ENTRY_POINT_GROUP)}


def available_models() -> list[str]:
    """Names of the installed models, sorted."""
    return sorted(_entry_points())


def _factory(name: str) -> Callable[..., Colorizer]:
    points = _entry_points()
    if name not in points:
        known = ", ".join(sorted(points)) or "none: install a paper package, e.g. ./packages/cic"
        raise ValueError(f"unknown model {name!r}; installed models: {known}")
    return points[name].load()


def factory_options(factory: Callable[..., Any]) -> tuple[ColorizeOption, ...]:
    """The options a factory declares (:func:`with_options`); none for a plain function."""
    options = tuple(getattr(factory, "options", ()))
    for option in options:
        if not isinstance(option, ColorizeOption):
            raise TypeError(f"{factory!r} declares {option!r}, not a ColorizeOption")
    return options


def model_options(name: str) -> tuple[ColorizeOption, ...]:
    """The options of the installed model ``name`` (imports its plug-in).

    Raises:
        ValueError: no installed package registers ``name``.
    """
    return factory_options(_factory(name))


def loadable_model_options(names: Sequence[str]) -> dict[str, tuple[ColorizeOption, ...]]:
    """The options of each model of ``names`` whose plug-in loads; one that does not load is
    left out with a warning (one broken package must not stop the others)."""
    out = {}
    for name in names:
        try:
            out[name] = model_options(name)
        except Exception as err:  # noqa: BLE001 (any error of a third-party plug-in)
            logger.warning("model %s does not load: %s", name, err)
    return out


def load_colorizer(name: str, **options: object) -> Colorizer:
    """Build the :class:`Colorizer` of the model registered as ``name`` with ``options``:
    :data:`COMMON_OPTIONS` and the model's own (each checked and converted to its type;
    ``None``: not given).

    Raises:
        ValueError: no installed package registers ``name`` (the message lists those that do),
            an option the model does not have (the message lists those it has), or a value of
            the wrong type.
    """
    factory = _factory(name)
    declared = {o.name: o for o in factory_options(factory)}
    unknown = sorted(set(options) - set(COMMON_OPTIONS) - set(declared))
    if unknown:
        has = ", ".join(declared) or "none"
        raise ValueError(f"model {name} has no option {', '.join(unknown)}; its own options: {has}")
    options = {k: declared[k].convert(v) if k in declared else v for k, v in options.items()}
    model = factory(**options)
    if not isinstance(model, Colorizer):
        raise TypeError(
            f"the factory of model {name!r} returned {type(model).__name__}, not a Colorizer"
        )
    return model


def resolve_device(device: str | None) -> torch.device:
    """``"auto"``/``None`` -> CUDA if available, else CPU; otherwise ``torch.device(device)``."""
    if device in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)
