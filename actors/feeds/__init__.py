"""Ranked feeds (Medium's Rex): the story index, the seven-step pipeline, per-user builders."""

from actors.feeds.builder import BuilderDeps, FeedBuilder, FeedCounters, FeedSettings
from actors.feeds.catalog import Catalog, CatalogView, StoryRecord, gather_rows, url_key
from actors.feeds.context import ContextSource, GraphContextSource, RawContext
from actors.feeds.errors import BadCursor, FeedRejection, IndexUnavailable, SnapshotExpired
from actors.feeds.messages import GetFeed, GetView, Invalidate, LiveFeeds, Lookup
from actors.feeds.pipeline import (
    FEATURES,
    Candidates,
    PipelineParams,
    Ranked,
    UserContext,
    aggregate,
    annotate,
    best_first,
    diversify,
    preprocess,
    rank_feed,
    trending,
)
from actors.feeds.registry import (
    FeedEventRouter,
    FeedRegistry,
    Feeds,
    InvalidateFeed,
    feeds_subtree,
)
from actors.feeds.scorer import LinearScorer, RemoteScorer, ScorerConfigError
from actors.feeds.snapshot import FeedItem, FeedPage, FeedSnapshot
from actors.feeds.story_index import StoryIndex

__all__ = [
    "FEATURES",
    "BadCursor",
    "BuilderDeps",
    "Candidates",
    "Catalog",
    "CatalogView",
    "ContextSource",
    "FeedBuilder",
    "FeedCounters",
    "FeedEventRouter",
    "FeedItem",
    "FeedPage",
    "FeedRegistry",
    "FeedRejection",
    "FeedSettings",
    "FeedSnapshot",
    "Feeds",
    "GetFeed",
    "GetView",
    "GraphContextSource",
    "IndexUnavailable",
    "Invalidate",
    "InvalidateFeed",
    "LinearScorer",
    "LiveFeeds",
    "Lookup",
    "PipelineParams",
    "Ranked",
    "RawContext",
    "RemoteScorer",
    "ScorerConfigError",
    "SnapshotExpired",
    "StoryIndex",
    "StoryRecord",
    "UserContext",
    "aggregate",
    "annotate",
    "best_first",
    "diversify",
    "feeds_subtree",
    "gather_rows",
    "preprocess",
    "rank_feed",
    "trending",
    "url_key",
]
