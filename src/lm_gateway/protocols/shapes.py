"""The JSON shape of a request, as its translators read it: which fields are objects, arrays or
strings. Translators read a request trusting its shape (checking it on every request would cost the
hot path for the rare malformed one); when one fails on a client's request, the API layer asks
:func:`first_problem` what was wrong, so the client is told which field to fix ("messages[1].
tool_calls must be an array of tool calls") instead of getting Python's words for it.

A field that is absent or ``null`` is never a problem here: translators read every field with a
default. Only the types are described, not the values; the upstream still judges those.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol


class Shape(Protocol):
    @property
    def what(self) -> str:
        """The shape in words, after "must be": "a string", "an array of tool calls"."""
        ...

    def fits(self, value: Any) -> bool:
        """Whether ``value`` is of this shape's JSON type (its insides not looked at)."""
        ...

    def problem(self, value: Any, path: str) -> str | None:
        """The first field of ``value`` (at ``path``) that is not of its shape, in words, or None."""
        ...


@dataclass(frozen=True, slots=True)
class Scalar:
    what: str
    types: tuple[type, ...]

    def fits(self, value: Any) -> bool:
        # (JSON true is not a number: bool is a subclass of int in Python)
        return isinstance(value, self.types) and (bool in self.types or not isinstance(value, bool))

    def problem(self, value: Any, path: str) -> str | None:
        return None if self.fits(value) else f"{path} must be {self.what}"


@dataclass(frozen=True, slots=True)
class Obj:
    fields: Mapping[str, Shape] = field(default_factory=dict)
    required: tuple[str, ...] = ()
    what: str = "an object"

    def fits(self, value: Any) -> bool:
        return isinstance(value, dict)

    def problem(self, value: Any, path: str) -> str | None:
        if not self.fits(value) or any(value.get(name) is None for name in self.required):
            return f"{path} must be {self.what}"
        for name, shape in self.fields.items():
            inner = value.get(name)
            if inner is not None and (problem := shape.problem(inner, f"{path}.{name}" if path else name)):
                return problem
        return None


@dataclass(frozen=True, slots=True)
class Arr:
    items: Shape
    what: str

    def fits(self, value: Any) -> bool:
        return isinstance(value, list)

    def problem(self, value: Any, path: str) -> str | None:
        if not self.fits(value):
            return f"{path} must be {self.what}"
        for index, item in enumerate(value):
            if problem := self.items.problem(item, f"{path}[{index}]"):
                return problem
        return None


@dataclass(frozen=True, slots=True)
class Either:
    """One of several shapes, told apart by their JSON type (a string, or an array of parts)."""

    options: tuple[Shape, ...]
    what: str

    def fits(self, value: Any) -> bool:
        return any(option.fits(value) for option in self.options)

    def problem(self, value: Any, path: str) -> str | None:
        for option in self.options:
            if option.fits(value):
                return option.problem(value, path)
        return f"{path} must be {self.what}"


STRING = Scalar("a string", (str,))
INTEGER = Scalar("an integer", (int,))
NUMBER = Scalar("a number", (int, float))
BOOLEAN = Scalar("true or false", (bool,))
OBJECT = Obj()
STRINGS = Arr(STRING, "an array of strings")
STRING_OR_STRINGS = Either((STRING, STRINGS), "a string or an array of strings")


def text_or(part: Shape, plural: str) -> Either:
    """A string, or an array of ``part`` (``plural``: "content parts", "content blocks")."""
    return Either((STRING, Arr(part, f"an array of {plural}")), f"a string or an array of {plural}")


def messages_of(fields: Mapping[str, Shape]) -> Arr:
    """An array of messages: objects with a string ``role``, and ``fields``."""
    message = Obj({"role": STRING, **fields}, ("role",), "an object with a string 'role'")
    return Arr(message, "an array of messages")


def first_problem(body: Any, shape: Shape) -> str | None:
    """The first field of ``body`` that is not of its place in ``shape``, in words, or None."""
    return shape.problem(body, "")
