"""Named kinds of one sort (tasks, freezing plans, architecture families, device inputs),
each added by decorating a small class: the machinery looks kinds up by name and never
lists them itself. Standard library only: the torch-free runtime uses it too.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

T = TypeVar("T")


class Registry(Generic[T]):
    """A name -> kind table.

    Args:
        what: what a kind is called in messages ("task", "freezing plan", ...).
    """

    def __init__(self, what: str) -> None:
        self.what = what
        self._kinds: dict[str, T] = {}

    def register(self, *names: str) -> Callable[[T], T]:
        """Decorator: serve these names with the decorated kind (a later registration of
        the same name replaces the earlier one, so a test can redefine a kind)."""

        def decorate(kind: T) -> T:
            for name in names:
                self._kinds[name] = kind
            return kind

        return decorate

    def get(self, name: str) -> T | None:
        return self._kinds.get(name)

    def names(self) -> list[str]:
        return sorted(self._kinds)

    def unknown(self, name: object) -> str:
        """The one-line reason `name` is not a kind: what it is, and the known ones."""
        return f"unknown {self.what} {name!r} (known: {', '.join(self.names()) or 'none'})"

    def __contains__(self, name: object) -> bool:
        return name in self._kinds

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())
