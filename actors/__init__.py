"""The actor runtime, the event bus, and Starling's long-lived actors."""

from actors.bus import BusStatistics, EventBus, Overflow, SubscriberStatistics, Subscription
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
    "BusStatistics",
    "Call",
    "EventBus",
    "Overflow",
    "Rejection",
    "SubscriberStatistics",
    "Subscription",
]
