"""The options of a continual-learning method, and the checks every value of a run's configuration goes through.

A method declares its options in its own file ([`StrategyOption`]); each becomes a flag `--<name>`, a key of presets
and of the run's identity, and a line of `--help`, with no other change.
"""

import math
from dataclasses import dataclass
from typing import Any


class UnknownKeysError(ValueError):
    """Configuration keys that are neither fields of the configuration nor options of a registered method."""


@dataclass(frozen=True)
class StrategyOption:
    r"""
    One hyperparameter of a method.

    Args:
        name (`str`): Its key in presets and `run_config.json`, its flag (`--<name>`) and its attribute on the
            configuration (`config.<name>`). Name it after the method (`der_alpha`), as every method's options share
            one namespace.
        type (`type`): `int`, `float`, `str` or `bool`.
        default (`Any`): Its value when not given; `None` for an option that is unset until given. Give an option
            added to a method later the default that keeps the method's earlier behaviour: a run recorded without it
            ran with its default.
        help (`str`): What it does, for `--help`.
        low (`float`, *optional*): The lowest valid number; unbounded when `None`.
        high (`float`, *optional*): The highest valid number (inclusive); unbounded when `None`.
        low_inclusive (`bool`, *optional*, defaults to `True`): Whether `low` itself is valid.
        choices (`tuple[str, ...]`, *optional*): The valid values of a string option.
    """

    name: str
    type: type
    default: Any
    help: str
    low: float | None = None
    high: float | None = None
    low_inclusive: bool = True
    choices: tuple[str, ...] | None = None

    def __post_init__(self):
        if self.type not in (int, float, str, bool):
            raise ValueError(f"Option {self.name!r}: type must be int, float, str or bool, not {self.type!r}.")
        if self.default is not None:
            self.check(self.default)

    def check(self, value: Any) -> None:
        """Refuses a value of the wrong type, out of range or not a choice (`ValueError` naming `--<name>`)."""
        if value is None and self.default is None:
            return
        if self.choices is not None:
            check_choice(self.name, value, self.choices)
        elif self.type in (int, float):
            check_number(
                self.name, value, self.low, self.high, integer=self.type is int, low_inclusive=self.low_inclusive
            )
        elif not isinstance(value, self.type):
            raise ValueError(f"`--{self.name}` must be a {self.type.__name__}, got {value!r}.")


def check_choice(name: str, value: Any, allowed: tuple | list) -> None:
    r"""
    Refuses a value that is not one of `allowed`.

    Args:
        name (`str`): The configuration key (named as its flag in the error).
        value (`Any`): The value.
        allowed (`tuple` or `list`): The valid values.
    """
    if value not in allowed:
        raise ValueError(f"`--{name}` must be one of {list(allowed)}, got {value!r}.")


def check_number(
    name: str,
    value: Any,
    low: float | None,
    high: float | None,
    integer: bool,
    low_inclusive: bool = True,
    optional: bool = False,
) -> None:
    r"""
    Refuses a value that is not a finite number (an integer when `integer`) within `[low, high]`.

    Args:
        name (`str`): The configuration key (named as its flag in the error).
        value (`Any`): The value.
        low (`float`, *optional*): The lowest valid value; unbounded when `None`.
        high (`float`, *optional*): The highest valid value (inclusive); unbounded when `None`.
        integer (`bool`): Whether the value must be an integer.
        low_inclusive (`bool`, *optional*, defaults to `True`): Whether `low` itself is valid.
        optional (`bool`, *optional*, defaults to `False`): Whether `None` (unset) is valid.
    """
    if value is None and optional:
        return
    kind = "an integer" if integer else "a number"
    valid = isinstance(value, int) if integer else isinstance(value, (int, float))
    if isinstance(value, bool) or not valid or (not integer and not math.isfinite(value)):
        raise ValueError(f"`--{name}` must be {kind}, got {value!r}.")
    too_low = low is not None and (value < low or (value == low and not low_inclusive))
    if too_low or (high is not None and value > high):
        bound = "" if low is None else f"{'>=' if low_inclusive else '>'} {low}"
        bound += "" if high is None else f"{' and ' if bound else ''}<= {high}"
        raise ValueError(f"`--{name}` must be {bound}, got {value!r}.")
