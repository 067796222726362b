"""In-process events: a lower floor publishes, a higher one subscribes (wired at composition).

A subscriber runs in the publisher's transaction, on the same session, before the publisher
returns: what it writes commits or rolls back with the change that caused it. Handlers run in the
order they were connected; connecting the same handler twice keeps one.
"""

from collections.abc import Callable
from typing import Any


class Signal:
    """A named event with its subscribers."""

    def __init__(self, name: str) -> None:
        self.name = name
        self._handlers: list[Callable[..., Any]] = []

    def connect(self, handler: Callable[..., Any]) -> None:
        """Call `handler` each time the event is sent."""
        if handler not in self._handlers:
            self._handlers.append(handler)

    def disconnect(self, handler: Callable[..., Any]) -> None:
        """Stop calling `handler`."""
        if handler in self._handlers:
            self._handlers.remove(handler)

    @property
    def handlers(self) -> tuple[Callable[..., Any], ...]:
        return tuple(self._handlers)

    def send(self, *args: Any, **kwargs: Any) -> None:
        """Call every subscriber with these arguments."""
        for handler in tuple(self._handlers):
            handler(*args, **kwargs)

    def __repr__(self) -> str:
        return f"Signal({self.name!r}, {len(self._handlers)} handler(s))"
