"""Options declared once, as dataclass fields: name, type, default and help.

The same declaration gives a command its flags (:func:`add_arguments`), a Python caller a checked
settings object (:class:`Settings`), and a preset its list of valid keys. Because the values are
checked when the object is made, a notebook, a preset and the command line all meet the same
errors, each naming the flag a user would type.

A plugin declares its options the same way and returns the class from its ``add_options`` hook::

    from dataclasses import dataclass
    from ddtoolbox.options import Settings, option, positive_float

    @dataclass(kw_only=True)
    class BoostOptions(Settings):
        boost_factor: float = option(2.0, "gradient factor inside the centre (default 2)", type=positive_float)

This module imports nothing from the rest of ddtoolbox but its errors, so plugins may import it
freely.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
from dataclasses import MISSING, dataclass
from typing import Any, Callable

from .errors import UsageError

_KEY = "ddtoolbox"


# ---------------------------------------------------------------------------- value types


def _number(value, kind):
    if isinstance(value, bool):
        raise argparse.ArgumentTypeError(f"expected {'an integer' if kind is int else 'a number'}, got {value!r}")
    try:
        number = kind(value)
    except (TypeError, ValueError):
        raise argparse.ArgumentTypeError(
            f"expected {'an integer' if kind is int else 'a number'}, got '{value}'") from None
    if kind is int and isinstance(value, float) and value != number:
        raise argparse.ArgumentTypeError(f"expected an integer, got {value}")
    return number


def integer(value) -> int:
    return _number(value, int)


def number(value) -> float:
    return _number(value, float)


def positive_float(value) -> float:
    v = _number(value, float)
    if not v > 0:   # also refuses NaN
        raise argparse.ArgumentTypeError(f"must be positive, got {value}")
    return v


def non_negative_float(value) -> float:
    v = _number(value, float)
    if not v >= 0:
        raise argparse.ArgumentTypeError(f"must not be negative, got {value}")
    return v


#: learning rates at or above this cannot be applied to float32 tensors
LR_LIMIT = 1e30


def learning_rate(value) -> float:
    """A learning rate: non-negative and small enough to multiply float32 gradients with."""
    v = non_negative_float(value)
    if not v < LR_LIMIT:
        raise argparse.ArgumentTypeError(f"must be below {LR_LIMIT:g} (float32 tensors overflow), got {value}")
    return v


#: the largest float32: torch's SGD cannot even apply a larger step size (an overflow error, not a divergence)
FLOAT32_MAX = 3.4028234663852886e38


def positive_learning_rate(value) -> float:
    """A network's SGD learning rate: positive and a float32, so that a rate too large to train with
    diverges (exit 3, nothing stored) instead of failing inside the optimiser (exit 1)."""
    v = positive_float(value)
    if not v < FLOAT32_MAX:
        raise argparse.ArgumentTypeError(f"must be a number below {FLOAT32_MAX:.3g} (the largest float32), got {value}")
    return v


def finite_float(value) -> float:
    v = _number(value, float)
    if not math.isfinite(v):
        raise argparse.ArgumentTypeError(f"must be a finite number, got {value}")
    return v


def positive_int(value) -> int:
    v = _number(value, int)
    if v < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return v


def non_negative_int(value) -> int:
    v = _number(value, int)
    if v < 0:
        raise argparse.ArgumentTypeError(f"must not be negative, got {value}")
    return v


def seed(value) -> int:
    """A random seed every generator accepts (numpy's and per-expert seeds need it below 2**31)."""
    v = _number(value, int)
    if not 0 <= v < 2**31:
        raise argparse.ArgumentTypeError(f"must be in [0, 2**31), got {value}")
    return v


def text(value) -> str:
    if not isinstance(value, str):
        raise argparse.ArgumentTypeError(f"expected text, got {value!r}")
    return value


# ---------------------------------------------------------------------------- declaring


@dataclass(frozen=True)
class OptionInfo:
    """How one field appears on the command line (kept in the field's metadata)."""

    help: str
    flags: tuple[str, ...] = ()
    type: Callable[[Any], Any] | None = None
    metavar: str | None = None
    choices: tuple | None = None
    group: str | None = None
    several: bool = False          #: ``--model A B C``: one flag, several values
    repeat: bool = False           #: ``--layer A --layer B``: a repeatable flag
    off_flag: str | None = None    #: for a switch: a second flag that turns it off again


def option(default=MISSING, help: str = "", *, flags=(), type=None, metavar=None, choices=None, group=None,
           several=False, repeat=False, off_flag=None):
    """A dataclass field that is also a command-line option.

    :param default: the value when the option is not given; ``False`` makes a switch
        (``--flag``), a list a repeatable or multi-value option. No default: a required option.
    :param help: one line for ``--help``; state the default in it.
    :param flags: the option strings (default ``--field-name``); give several for aliases.
    :param type: converts and checks one value (``positive_int``, ...); raise
        ``argparse.ArgumentTypeError`` with a message that says what was wrong. Default: the type of
        ``default`` (int, float or str).
    """
    info = OptionInfo(help=help, flags=tuple(flags), type=type, metavar=metavar,
                      choices=tuple(choices) if choices is not None else None, group=group,
                      several=several, repeat=repeat, off_flag=off_flag)
    metadata = {_KEY: info}
    if isinstance(default, list):
        items = list(default)
        return dataclasses.field(default_factory=lambda: list(items), metadata=metadata)
    if default is MISSING:
        return dataclasses.field(metadata=metadata)
    return dataclasses.field(default=default, metadata=metadata)


def option_fields(cls_or_obj) -> list[tuple[dataclasses.Field, OptionInfo]]:
    """The fields declared with :func:`option`, in declaration order."""
    return [(f, f.metadata[_KEY]) for f in dataclasses.fields(cls_or_obj) if _KEY in f.metadata]


def flag_of(f: dataclasses.Field, info: OptionInfo) -> str:
    return info.flags[0] if info.flags else "--" + f.name.replace("_", "-")


def _default(f: dataclasses.Field):
    if f.default is not MISSING:
        return f.default
    if f.default_factory is not MISSING:
        return f.default_factory()
    return None


def _converter(f: dataclasses.Field, info: OptionInfo):
    if info.type is not None:
        return info.type
    d = _default(f)
    if isinstance(d, bool):
        return None
    if isinstance(d, int):
        return integer
    if isinstance(d, float):
        return number
    return text


def _is_switch(f, info) -> bool:
    return isinstance(_default(f), bool) and info.type is None


def _is_list(f, info) -> bool:
    return info.several or info.repeat or isinstance(_default(f), list)


def check_value(f: dataclasses.Field, info: OptionInfo, value):
    """``value`` converted and checked as the option's type says; a UsageError names the flag."""
    flag = flag_of(f, info)
    if value is None:
        if f.default is MISSING and f.default_factory is MISSING:
            raise UsageError(f"{flag} is required")
        if _default(f) is not None:            # only options whose default is "not given" may be None
            raise UsageError(f"{flag} needs a value (its default is {_default(f)!r})")
        return None
    if _is_switch(f, info):
        if not isinstance(value, bool):
            raise UsageError(f"{flag} is a switch: give true or false, not {value!r}")
        return value
    if _is_list(f, info):
        if isinstance(value, (str, bytes)) or not isinstance(value, (list, tuple)):
            value = [value]
        return [_check_one(flag, f, info, v) for v in value]
    return _check_one(flag, f, info, value)


def _check_one(flag, f, info, value):
    convert = _converter(f, info)
    if convert is not None:
        try:
            value = convert(value)
        except argparse.ArgumentTypeError as exc:
            raise UsageError(f"{flag} {exc}") from None
        except (TypeError, ValueError) as exc:
            raise UsageError(f"{flag}: invalid value {value!r} ({exc})") from None
    if info.choices is not None and value not in info.choices:
        raise UsageError(f"{flag} must be one of {', '.join(map(str, info.choices))} (got {value!r})")
    return value


class Settings:
    """Base of typed settings (use with ``@dataclass(kw_only=True)``): checked once, when made.

    Every field declared with :func:`option` is converted and checked by its type; then
    :meth:`check` runs the checks that involve several fields. Errors are :class:`UsageError`\\ s
    that name the flag, whether the values came from Python, a preset or the command line.
    """

    def __post_init__(self):
        for f, info in option_fields(self):
            object.__setattr__(self, f.name, check_value(f, info, getattr(self, f.name)))
        self.check()

    def check(self) -> None:
        """Checks across fields; raise :class:`UsageError` naming the flags and a valid choice."""

    @classmethod
    def from_values(cls, values: dict, what: str | None = None):
        """Make the settings from ``{field: value}``; an unknown key is an error that lists the known ones."""
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - names)
        if unknown:
            raise UsageError(f"unknown {what or cls.__name__} setting(s) {', '.join(unknown)}; "
                             f"known: {', '.join(sorted(names))}")
        return cls(**values)

    @classmethod
    def from_namespace(cls, namespace: argparse.Namespace):
        """The settings from parsed arguments (fields the namespace lacks keep their defaults)."""
        return cls(**{f.name: getattr(namespace, f.name) for f in dataclasses.fields(cls)
                      if hasattr(namespace, f.name)})

    def as_dict(self) -> dict:
        """The settings as plain values (for metadata files)."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}

    def replace(self, **changes):
        return dataclasses.replace(self, **changes)


# ---------------------------------------------------------------------------- command lines


def add_arguments(parser, cls, *, skip=(), title: str | None = None, require: bool = True) -> None:
    """Add one flag per :func:`option` field of ``cls`` to ``parser``.

    Fields with a ``group`` go into argument groups of that title; the others into ``title``'s group
    (or straight onto ``parser``). A class's own fields come before those it inherits. Defaults come
    from the dataclass, so they are stated once. With ``require=False`` a field without a default is
    left optional on the command line (a plugin's options: checked only when the plugin is active).
    """
    groups: dict[str, Any] = {}

    def target(name):
        if name is None:
            return parser
        if name not in groups:
            groups[name] = parser.add_argument_group(name)
        return groups[name]

    def declared_in(pair) -> int:   # a class's own options first, then its bases' (common options last)
        return next(i for i, c in enumerate(cls.__mro__) if pair[0].name in c.__dict__.get("__annotations__", {}))

    for f, info in sorted(option_fields(cls), key=declared_in):
        if f.name in skip:
            continue
        where = target(info.group or title)
        flags = info.flags or ("--" + f.name.replace("_", "-"),)
        default = _default(f)
        kwargs: dict = {"dest": f.name, "help": info.help}
        if _is_switch(f, info):
            where.add_argument(*flags, action="store_true", default=default, **kwargs)
            if info.off_flag:
                where.add_argument(info.off_flag, dest=f.name, action="store_false",
                                   help=f"undo {flags[0]} (e.g. one set by a preset)")
            continue
        convert = _converter(f, info)
        kwargs.update(type=convert, metavar=info.metavar, default=default)
        if info.choices is not None:
            kwargs["choices"] = info.choices
        if info.repeat:
            kwargs["action"] = "append"
        elif info.several:
            kwargs["nargs"] = "+"
        if f.default is MISSING and f.default_factory is MISSING and require:
            kwargs["required"] = True
        where.add_argument(*flags, **kwargs)
