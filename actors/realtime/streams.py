"""The names the realtime pipeline shares with Redis and with other processes.

One definition each, imported by the nozzle, the transformers, the relay, the
bridge and the publishing API (and by tests and the benchmark's producers).
"""

from __future__ import annotations

from typing import Final

STREAM: Final = "starling:events"
"""The stream events enter by."""
GROUP: Final = "starling"
"""The consumer group every process's nozzle reads in."""
TOPIC: Final = "starling:realtime"
"""The Pub/Sub topic rendered batches cross processes by."""
PROFILE_PREFIX: Final = "starling:profile:"
"""Cache keys of users' display fields: ``starling:profile:<user>``."""
