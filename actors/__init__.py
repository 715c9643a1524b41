"""The actor runtime and Starling's long-lived actors."""

from actors.runtime import (
    Actor,
    ActorCrashed,
    ActorError,
    ActorRef,
    ActorState,
    ActorStatistics,
    ActorUnavailable,
    Call,
    Rejection,
)

__all__ = [
    "Actor",
    "ActorCrashed",
    "ActorError",
    "ActorRef",
    "ActorState",
    "ActorStatistics",
    "ActorUnavailable",
    "Call",
    "Rejection",
]
