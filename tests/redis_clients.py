"""redis-py clients for the tests' own checks, on a Redis or a Redis Cluster URL alike."""

from __future__ import annotations

from typing import Any

import redis
from redis.cluster import RedisCluster

from stores.backends import REDIS_CLUSTER_SCHEMES
from stores.redis_cluster import parse_cluster_url


def client_for(url: str, **options: Any) -> redis.Redis | RedisCluster:
    """A redis-py client of ``url``: ``redis.Redis`` for ``redis://``, ``RedisCluster`` (on
    its first node) for ``redis+cluster://``; ``options`` go to the client."""
    if url.partition("://")[0] in REDIS_CLUSTER_SCHEMES:
        host, port = parse_cluster_url(url).seeds[0]
        return RedisCluster(host=host, port=port, **options)
    return redis.Redis.from_url(url, **options)


def flush(url: str) -> None:
    """Empty the Redis of ``url`` (every master of a cluster)."""
    client = client_for(url)
    try:
        if isinstance(client, RedisCluster):
            client.flushall(target_nodes=RedisCluster.PRIMARIES)
        else:
            client.flushall()
    finally:
        client.close()
