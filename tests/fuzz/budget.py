"""How many cases each fuzz test runs: the hypothesis profiles ``ci`` and ``fuzz``.

``ci`` (the default) runs a fixed, derandomized set of cases, the same on every run
(tests are deterministic); ``fuzz``, chosen by ``STARLING_FUZZ=1`` (``make fuzz``),
draws :data:`SCALE` times as many random cases and keeps what fails in hypothesis's
example database (``.hypothesis/``) to replay it first next time.

The profiles are applied per test (:func:`fuzzing`), not loaded globally, so the
property tests outside ``tests/fuzz`` keep their own settings.
"""

from __future__ import annotations

import os
from typing import Final

from hypothesis import HealthCheck, settings

FUZZ: Final = os.environ.get("STARLING_FUZZ", "") not in ("", "0")
"""Whether the long run was asked for (``STARLING_FUZZ=1``)."""
SCALE: Final = 40
"""How many times more cases the ``fuzz`` profile draws than ``ci``."""

_QUIET = [HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.large_base_example]
settings.register_profile(
    "ci", deadline=None, derandomize=True, database=None, suppress_health_check=_QUIET
)
settings.register_profile("fuzz", deadline=None, print_blob=True, suppress_health_check=_QUIET)
PROFILE: Final = "fuzz" if FUZZ else "ci"


def fuzzing(examples: int) -> settings:
    """The settings of a fuzz test: ``examples`` cases in CI, :data:`SCALE` × more under
    ``STARLING_FUZZ=1``."""
    return settings(settings.get_profile(PROFILE), max_examples=examples * (SCALE if FUZZ else 1))


def repeat(count: int) -> int:
    """``count`` for a hand-rolled loop in CI (a flood of frames), :data:`SCALE` × more
    under ``STARLING_FUZZ=1``."""
    return count * (SCALE if FUZZ else 1)
