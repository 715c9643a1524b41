"""The social graph actors (GoSocial): graph readers and their pool."""

from actors.social.graph_reader import GraphReader
from actors.social.messages import Counts, CountsResult, Following, NotFound, UsersPage
from actors.social.pool import ReaderPool

__all__ = [
    "Counts",
    "CountsResult",
    "Following",
    "GraphReader",
    "NotFound",
    "ReaderPool",
    "UsersPage",
]
