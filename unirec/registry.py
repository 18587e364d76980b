"""One small registry class behind encoders, losses, fusions, ops and embedders.

Built-ins register with the same decorator a plugin uses, so a plugin is a first-class
citizen. Third-party entries can also arrive through an entry-point group, loaded lazily
the first time the registry is asked for a name it does not hold.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterator
from importlib.metadata import entry_points
from typing import Generic, TypeVar

from unirec.errors import UnknownComponentError

T = TypeVar("T")


def did_you_mean(name: str, choices: list[str] | tuple[str, ...] | set[str]) -> str:
    """A ' (did you mean 'x'?)' suffix for error messages, or '' when nothing is close."""
    close = difflib.get_close_matches(name, sorted(choices), n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


class Registry(Generic[T]):
    """Name -> component. ``kind`` names the registry in error messages."""

    def __init__(self, kind: str, entry_point_group: str | None = None) -> None:
        self.kind = kind
        self.entry_point_group = entry_point_group
        self._items: dict[str, T] = {}
        self._entry_points_loaded = entry_point_group is None

    def register(self, name: str, obj: T | None = None, *, replace: bool = False):
        """Register ``obj`` under ``name``; used bare as ``@registry.register("name")``."""
        if not name or name != name.strip():
            raise ValueError(f"{self.kind} names must be non-empty and unpadded, got {name!r}")

        def add(item: T) -> T:
            if name in self._items and not replace and self._items[name] is not item:
                raise ValueError(
                    f"{self.kind} {name!r} is already registered (pass replace=True to override)"
                )
            self._items[name] = item
            return item

        return add(obj) if obj is not None else add

    def get(self, name: str) -> T:
        """The component called ``name``; an unknown name raises with a suggestion."""
        if name not in self._items:
            self._load_entry_points()
        try:
            return self._items[name]
        except KeyError:
            known = ", ".join(sorted(self._items)) or "none"
            raise UnknownComponentError(
                f"unknown {self.kind} {name!r}{did_you_mean(name, list(self._items))}; "
                f"known: {known}"
            ) from None

    def names(self) -> list[str]:
        """Every registered name, sorted, entry points included."""
        self._load_entry_points()
        return sorted(self._items)

    def __contains__(self, name: object) -> bool:
        self._load_entry_points()
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def _load_entry_points(self) -> None:
        if self._entry_points_loaded:
            return
        self._entry_points_loaded = True
        for ep in entry_points(group=self.entry_point_group):
            if ep.name not in self._items:
                self._items[ep.name] = ep.load()

