"""The realtime pipeline (Disqus-style): channels, history and recovery, delivery."""

from actors.realtime.channels import Channel, ChannelKind, may_subscribe, parse_channel
from actors.realtime.history import (
    ChannelHistory,
    Histories,
    HistoriesStatistics,
    Position,
    Publication,
    Recovery,
    new_epoch,
)
from actors.realtime.publisher import Publisher, PublisherStatistics, Render, Subscriber

__all__ = [
    "Channel",
    "ChannelHistory",
    "ChannelKind",
    "Histories",
    "HistoriesStatistics",
    "Position",
    "Publication",
    "Publisher",
    "PublisherStatistics",
    "Recovery",
    "Render",
    "Subscriber",
    "may_subscribe",
    "new_epoch",
    "parse_channel",
]
