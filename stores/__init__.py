"""Backends behind small interfaces: graph (Ladybug, Neo4j), cache/stream/pubsub (memory, Redis).

The ports are :class:`~stores.graph.GraphStore`, :class:`~stores.cache.Cache`,
:class:`~stores.stream.Stream`, :class:`~stores.pubsub.PubSub` and
:class:`~stores.presence.PresenceStore`; adapters are
chosen by URL in :mod:`stores.backends`. Nothing here imports an actor or a
protocol.
"""

from stores.backends import KeyValueBackend, open_graph, open_key_value, redact
from stores.cache import Cache
from stores.errors import BackendUnavailable, ConfigError, QueryError, StoreError
from stores.graph import GraphSession, GraphStore, ImportSummary
from stores.presence import PresenceStore
from stores.pubsub import Message, PubSub
from stores.schema import SOCIAL_SCHEMA, GraphSchema
from stores.stream import Stream, StreamEntry

__all__ = [
    "SOCIAL_SCHEMA",
    "BackendUnavailable",
    "Cache",
    "ConfigError",
    "GraphSchema",
    "GraphSession",
    "GraphStore",
    "ImportSummary",
    "KeyValueBackend",
    "Message",
    "PresenceStore",
    "PubSub",
    "QueryError",
    "StoreError",
    "Stream",
    "StreamEntry",
    "open_graph",
    "open_key_value",
    "redact",
]
