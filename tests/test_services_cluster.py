"""The real Redis Cluster the tests start and stop (``tests/services.py``: ``redis_cluster``).

Each test that kills nodes takes a fresh cluster of its own (about 2 s to start);
the others share the session's. Failover timings are printed, not asserted
beyond a generous bound (speed lives in ``bench/``).
"""

from __future__ import annotations

import os
import pathlib
import shutil
import socket
import subprocess
import uuid
from collections.abc import Iterator

import pytest
from redis.cluster import ClusterNode as PyClusterNode
from redis.cluster import RedisCluster

from tests.services import CLUSTER_SLOTS, RedisClusterHandle, key_slot, redis_cluster

FAILOVER_BOUND = 10.0
"""Seconds a replica may take to replace a killed master (``cluster-node-timeout`` is 1 s)."""

TAGGED_KEYS = [
    "{user1000}.following",
    "{user1000}.followers",
    "foo{}{bar}",
    "foo{{bar}}zap",
    "foo{bar}{zap}",
    "{}",
    "{",
    "}{x}",
    "a{b",
    "feed:{42}:items",
    "{42}",
    "é{ü}",
]
"""Hash-tag cases from the cluster specification ("Hash tags") and their edges."""


def _keys() -> list[str]:
    return [*TAGGED_KEYS, "", "foo", "123456789", *(f"starling:{i}:{i * 7919}" for i in range(30))]


def _startup_nodes(url: str) -> list[PyClusterNode]:
    """The ``host:port`` pairs of a ``redis+cluster://`` URL, as redis-py wants them."""
    assert url.startswith("redis+cluster://"), url
    pairs = [pair.rpartition(":") for pair in url.removeprefix("redis+cluster://").split(",")]
    # redis-py leaves ClusterNode.__init__ unannotated.
    return [PyClusterNode(host, int(port)) for host, _, port in pairs]  # type: ignore[no-untyped-call]


@pytest.fixture
def cluster_client(redis_cluster_url: str) -> Iterator[RedisCluster]:
    """redis-py's cluster client on the session's cluster."""
    client = RedisCluster(startup_nodes=_startup_nodes(redis_cluster_url), decode_responses=True)
    try:
        yield client
    finally:
        client.close()


def test_key_slot_matches_the_specification() -> None:
    """key_slot gives the specification's CRC16 check value and hashes a tagged key by its tag."""
    assert key_slot("123456789") == 0x31C3 % CLUSTER_SLOTS
    assert key_slot("foo") == 12182
    assert (
        key_slot("{user1000}.following") == key_slot("{user1000}.followers") == key_slot("user1000")
    )
    assert key_slot("foo{}{bar}") != key_slot("bar")  # an empty first tag: the whole key
    assert key_slot("foo{{bar}}zap") == key_slot("{bar")
    assert key_slot("foo{bar}{zap}") == key_slot("bar")
    assert key_slot("é{ü}") == key_slot("ü".encode())


@pytest.mark.redis
def test_key_slot_agrees_with_cluster_keyslot(cluster_client: RedisCluster) -> None:
    """For every test key, key_slot returns what the real cluster's CLUSTER KEYSLOT says."""
    node = cluster_client.get_random_node()  # type: ignore[no-untyped-call]  # unannotated
    for key in _keys():
        assert key_slot(key) == int(node.redis_connection.execute_command("CLUSTER KEYSLOT", key))


@pytest.mark.redis
def test_keys_written_by_redis_py_land_in_key_slot(cluster_client: RedisCluster) -> None:
    """A key set through redis-py's cluster client is stored in slot key_slot(key) of the master
    that serves that slot."""
    prefix = uuid.uuid4().hex[:8]
    keys = [f"{prefix}:{key}" for key in _keys()] + [f"{{{prefix}}}:{i}" for i in range(5)]
    for key in keys:
        cluster_client.set(key, "v")
    try:
        for key in keys:
            master = cluster_client.nodes_manager.get_node_from_slot(key_slot(key))
            stored = master.redis_connection.execute_command(
                "CLUSTER GETKEYSINSLOT", key_slot(key), 1000
            )
            assert key in stored, (key, key_slot(key), master.name)
    finally:
        cluster_client.delete(*keys[:1])  # a cross-slot DEL is refused; one key at a time
        for key in keys[1:]:
            cluster_client.delete(key)


@pytest.mark.redis
def test_cluster_forms_three_masters_with_one_replica_each(
    redis_cluster: RedisClusterHandle,
) -> None:
    """A fresh cluster has 3 masters serving all 16384 slots between them, each with exactly one
    replica of its own, and its URL names the masters."""
    masters, replicas = redis_cluster.masters(), redis_cluster.replicas()
    assert len(masters) == 3
    assert len(replicas) == 3
    assert sorted(id(r) for m in masters for r in redis_cluster.replicas_of(m)) == sorted(
        id(r) for r in replicas
    )
    assert all(len(redis_cluster.replicas_of(m)) == 1 for m in masters)
    owners = {redis_cluster.master_of(slot) for slot in (0, 5460, 5461, 10922, 10923, 16383)}
    assert owners == set(masters)
    for node in redis_cluster.nodes:
        info = redis_cluster.command(node, "CLUSTER", "INFO")
        assert f"cluster_slots_ok:{CLUSTER_SLOTS}" in info
        assert "cluster_size:3" in info
    assert redis_cluster.url == "redis+cluster://" + ",".join(m.address for m in masters)


@pytest.mark.redis
def test_killed_master_is_replaced_by_its_replica_which_it_rejoins(
    redis_cluster: RedisClusterHandle,
) -> None:
    """After a master is SIGKILLed its replica serves its slots within FAILOVER_BOUND seconds,
    and the old master, restarted, rejoins as that replica's replica."""
    slot = key_slot("foo")
    master = redis_cluster.master_of(slot)
    (replica,) = redis_cluster.replicas_of(master)
    redis_cluster.kill(master)
    promoted, seconds = redis_cluster.wait_promoted(master, FAILOVER_BOUND)
    print(f"failover took {seconds:.2f} s")
    assert promoted is replica
    assert redis_cluster.master_of(slot) is replica
    redis_cluster.restart(master)
    rejoined = redis_cluster.wait_ok(FAILOVER_BOUND)
    print(f"rejoin took {rejoined:.2f} s")
    assert master in redis_cluster.replicas()
    assert redis_cluster.replicas_of(replica) == [master]
    assert len(redis_cluster.masters()) == 3


def _running(pid: int) -> bool:
    """Whether a process with this pid exists and is a redis-server (not a reused pid)."""
    try:
        return b"redis-server" in pathlib.Path(f"/proc/{pid}/cmdline").read_bytes()
    except FileNotFoundError:
        return False


def _accepts(address: tuple[str, int]) -> bool:
    try:
        with socket.create_connection(address, timeout=1.0):
            return True
    except OSError:
        return False


@pytest.mark.redis
def test_cluster_leaves_no_process_behind(tmp_path: pathlib.Path) -> None:
    """Once redis_cluster exits, no node process it ever started runs, a restarted one included,
    and no node port accepts connections."""
    if shutil.which("redis-server") is None:
        pytest.skip("redis-server is not on PATH")
    with redis_cluster(tmp_path) as cluster:
        replica = cluster.replicas()[0]
        killed = replica.process.pid
        cluster.kill(replica)
        assert not _running(killed)
        cluster.restart(replica)
        pids = [node.process.pid for node in cluster.nodes]
        assert killed not in pids
        assert all(_running(pid) for pid in pids)
        addresses = [(node.host, node.port) for node in cluster.nodes]
    assert [pid for pid in pids if _running(pid)] == []
    assert [address for address in addresses if _accepts(address)] == []


@pytest.fixture
def network_namespace() -> Iterator[tuple[str, ...]]:
    """A fresh network namespace with loopback up, as a wrap (``nsenter --net=…``); skipped
    without the right to make one."""
    if os.geteuid() != 0 or not (shutil.which("unshare") and shutil.which("nsenter")):
        pytest.skip("needs root, unshare and nsenter")
    holder = subprocess.Popen(
        ["unshare", "--net", "sh", "-c", "ip link set lo up && echo up && exec sleep 600"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        assert holder.stdout is not None
        if holder.stdout.readline().strip() != b"up":
            pytest.skip(f"cannot make a network namespace: {holder.communicate()[1]!r}")
        yield ("nsenter", f"--net=/proc/{holder.pid}/ns/net")
    finally:
        holder.kill()
        holder.communicate()


@pytest.mark.redis
def test_cluster_under_a_wrap_is_reached_through_it(
    tmp_path: pathlib.Path, network_namespace: tuple[str, ...]
) -> None:
    """A cluster started under a wrap into another network namespace forms there and answers
    commands through the wrap, though this namespace cannot reach it."""
    with redis_cluster(tmp_path, wrap=network_namespace) as cluster:
        node = cluster.nodes[0]
        assert not _accepts((node.host, node.port))  # our loopback is not theirs
        assert len(cluster.masters()) == 3
        assert len(cluster.replicas()) == 3
        assert cluster.command(node, "CLUSTER", "KEYSLOT", "{user1000}.x") == str(
            key_slot("user1000")
        )
