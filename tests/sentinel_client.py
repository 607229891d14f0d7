"""redis-py's Sentinel client against roomguard's Sentinel-compatible endpoint.

Run by tests/sentinel.rs with .venv/bin/python:
    sentinel_client.py <sentinel-host> <sentinel-port> <shard> [<shard> ...]

Phase 1: discover_master, master_for(...).set/get, slave_for(...).get for every shard, then
print "phase1 ok" and wait for a line on stdin (the test loses room 1 meanwhile).
Phase 2: the same client objects must reach the new masters within the deadline and
writes must succeed; prints "master <shard> <ip> <port>" per shard and "phase2 ok".
Any failure raises (non-zero exit, traceback on stderr).
"""

import sys
import time

from redis import Redis
from redis.exceptions import RedisError
from redis.sentinel import Sentinel

host, port, shards = sys.argv[1], int(sys.argv[2]), sys.argv[3:]
DEADLINE = 30.0


def retry(what, fn):
    """Retries fn until it returns a true value or the deadline passes."""
    deadline = time.monotonic() + DEADLINE
    last = None
    while time.monotonic() < deadline:
        try:
            result = fn()
            if result:
                return result
        except RedisError as e:
            last = e
        time.sleep(0.1)
    raise AssertionError(f"{what}: not done within {DEADLINE}s (last error: {last!r})")


sentinel = Sentinel([(host, port)], socket_timeout=0.5)
masters = {s: sentinel.master_for(s, socket_timeout=0.5) for s in shards}
replicas = {s: sentinel.slave_for(s, socket_timeout=0.5) for s in shards}

# The same discovery over RESP3 (HELLO 3: maps instead of flat arrays).
sentinel3 = Sentinel([(host, port)], socket_timeout=0.5, sentinel_kwargs={"protocol": 3})

for shard in shards:
    ip, p = sentinel.discover_master(shard)
    print(f"master {shard} {ip} {p}", flush=True)
    assert sentinel3.discover_master(shard) == (ip, p), "RESP3 discovery disagrees"
    assert sorted(sentinel3.discover_slaves(shard)) == sorted(sentinel.discover_slaves(shard))
    assert sentinel.discover_slaves(shard), f"{shard}: no replica discovered"
    masters[shard].set("before", shard)
    assert masters[shard].get("before") == shard.encode()
    # Replication is asynchronous: the replica gets the write shortly.
    retry(f"{shard}: read back from a replica", lambda s=shard: replicas[s].get("before") == s.encode())
    # The check after the room loss ("data written before the loss is kept") needs the write on
    # every replica, room 2's head included, before room 1 is killed: a crash may lose writes
    # that had not yet travelled down the chain, and slave_for() above read only one replica.
    for rip, rport in sentinel.discover_slaves(shard):
        direct = Redis(host=rip, port=rport, socket_timeout=0.5)
        retry(f"{shard}: write reached {rip}:{rport}", lambda d=direct, s=shard: d.get("before") == s.encode())
print("phase1 ok", flush=True)

sys.stdin.readline()

for shard in shards:
    def write(s=shard):
        masters[s].set("after", s)
        return masters[s].get("after") == s.encode()

    retry(f"{shard}: write through master_for after the failover", write)
    ip, p = sentinel.discover_master(shard)
    print(f"master {shard} {ip} {p}", flush=True)
    assert masters[shard].get("before") == shard.encode(), "data written before the loss is kept"
    retry(f"{shard}: read through slave_for after the failover", lambda s=shard: replicas[s].get("after") == s.encode())
print("phase2 ok", flush=True)
