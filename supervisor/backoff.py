"""Exponential backoff with jitter between restarts.

The delay before the n-th consecutive restart (n = restarts in the current
intensity window, from 1) is ``min(maximum, initial * factor**(n-1))``,
multiplied by a random factor in ``[1 - jitter, 1]`` ("equal jitter" keeps
most of the delay; AWS Architecture Blog, "Exponential Backoff And Jitter").
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class Backoff:
    """Restart delay policy.

    Attributes:
        initial: delay before the first restart in a window, in seconds.
        factor: growth per further restart.
        maximum: cap on the delay, in seconds.
        jitter: fraction of the delay that is random, in ``[0, 1]``.
        rng: source of randomness (seed it for deterministic tests).
    """

    initial: float = 0.1
    factor: float = 2.0
    maximum: float = 10.0
    jitter: float = 0.2
    rng: random.Random = field(default_factory=random.Random, compare=False)

    def __post_init__(self) -> None:
        if self.initial < 0 or self.maximum < 0:
            raise ValueError("backoff delays must be >= 0 seconds")
        if self.factor < 1:
            raise ValueError(f"backoff factor must be >= 1, got {self.factor}")
        if not 0 <= self.jitter <= 1:
            raise ValueError(f"jitter must be within [0, 1], got {self.jitter}")

    def delay(self, attempt: int) -> float:
        """Seconds to wait before restart number ``attempt`` (>= 1) in the window."""
        base = min(self.maximum, self.initial * self.factor ** max(0, attempt - 1))
        return base * (1 - self.jitter * self.rng.random())
