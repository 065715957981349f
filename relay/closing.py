"""``Closing``: ``with obj:`` for an object with a ``close()``."""

from __future__ import annotations

from typing import Self


class Closing:
    """A base for objects that hold resources: ``with obj as o`` gives ``obj`` and calls its
    ``close()`` on the way out, whatever happened inside."""

    def close(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
