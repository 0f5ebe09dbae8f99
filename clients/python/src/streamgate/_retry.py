"""When the client tries again: exponential back-off with jitter between attempts that failed
in a way that may pass (100 ms doubling to 5 s, plus up to a fifth at random, so clients that
failed together do not come back together), or exactly what the daemon asked for
(``Retry-After``) when it asked."""

from __future__ import annotations

import random

FIRST_BACKOFF = 0.1
MAX_BACKOFF = 5.0
#: Longest an HTTP call waits on a rate limit or an unavailable daemon before it gives up.
PATIENCE = 60.0


class Backoff:
    """The pauses between attempts of one operation."""

    __slots__ = ("_next",)

    def __init__(self) -> None:
        self._next = FIRST_BACKOFF

    def pause(self, retry_after: float | None = None) -> float:
        """The pause before the next attempt: ``retry_after`` when the daemon sent one, else
        the next step of the back-off with jitter (also for a ``Retry-After: 0``, from a
        proxy say: never again without waiting)."""
        step = self._next
        self._next = min(self._next * 2, MAX_BACKOFF)
        if retry_after is not None and retry_after > 0:
            return retry_after
        return step + step * random.random() / 5

    def reset(self) -> None:
        """After a success: the next failure starts from the first step again."""
        self._next = FIRST_BACKOFF
