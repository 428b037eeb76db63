"""The leader lease and the fenced publish (app/cluster) on the real shared Redis, a key prefix per test:
one leader at a time, fencing tokens that only grow, a deposed leader steps down and cannot
publish, a leader that cannot reach Redis steps down before its lease could pass to anyone."""

from __future__ import annotations

import secrets

import pytest
from redis.asyncio import Redis

from app.cluster.lease import RedisLease
from app.cluster.link import _PUBLISH, ClusterLink
from tests.conftest import IN_CI


@pytest.fixture
async def redis_prefix():
    client = Redis.from_url("redis://127.0.0.1:6379/0", socket_timeout=2)
    try:
        await client.ping()
    except Exception:
        await client.aclose()
        if IN_CI:
            pytest.fail("Redis is required in CI")
        pytest.skip("no Redis at 127.0.0.1:6379")
    prefix = f"pbtest-lease-{secrets.token_hex(5)}"
    yield client, prefix
    keys = [k async for k in client.scan_iter(match=prefix + ":*")]
    if keys:
        await client.delete(*keys)
    await client.aclose()


def _lease(client: Redis, prefix: str, events: list[str], name: str, lease_s: float = 5.0) -> RedisLease:
    async def gain() -> None:
        events.append(f"{name}+")

    async def lose() -> None:
        events.append(f"{name}-")

    return RedisLease(client, prefix, lease_s, gain, lose)


async def test_one_leader_growing_tokens_and_step_down(redis_prefix) -> None:
    client, prefix = redis_prefix
    events: list[str] = []
    a, b = _lease(client, prefix, events, "a"), _lease(client, prefix, events, "b")
    await a.step()
    await b.step()
    assert (a.leading, b.leading) == (True, False) and events == ["a+"]
    assert await client.get(prefix + ":leader") == a.token.encode()
    await client.delete(prefix + ":leader")  # a's lease expired (a paused past it)
    await b.step()
    assert b.leading and int(b.token) > int(a.token)
    await a.step()  # a's renewal finds b's token: a steps down
    assert not a.leading and a.token is None and events == ["a+", "b+", "a-"]
    await b.release()
    assert await client.get(prefix + ":leader") is None and events[-1] == "b-"
    await a.step()
    assert a.leading and events[-1] == "a+"
    await a.release()


async def test_deposed_leader_cannot_publish(redis_prefix) -> None:
    client, prefix = redis_prefix
    publish = client.register_script(_PUBLISH)
    keys = [prefix + ":leader", prefix + ":state:x", prefix + ":stream:x"]
    await client.set(prefix + ":leader", "7")
    pubsub = client.pubsub()
    await pubsub.subscribe(prefix + ":tiles")
    args = ["6", b'{"seq":1}', b'{"type":"update"}', 10, "e1", 1, prefix + ":tiles", b"h\n{}"]
    assert await publish(keys=keys, args=args) == 0  # token 6 < the holder's 7: nothing written
    assert await client.get(prefix + ":state:x") is None and await client.xlen(prefix + ":stream:x") == 0
    args[0] = "7"
    assert await publish(keys=keys, args=args) == 1
    assert await client.get(prefix + ":state:x") == b'{"seq":1}' and await client.xlen(prefix + ":stream:x") == 1
    await pubsub.aclose()


async def test_leader_without_redis_steps_down_within_the_lease() -> None:
    events: list[str] = []
    dead = Redis(port=1, socket_timeout=0.2, socket_connect_timeout=0.2)  # nothing listens on port 1
    lease = _lease(dead, "pbtest-dead", events, "a", lease_s=0.3)
    lease.token = "5"  # as if it had been leading, last renewed long ago
    lease._renewed_at_s = 0.0
    assert not lease.leading  # leading needs a renewal within 0.9 × lease
    await lease.step()
    assert lease.token is None and events == ["a-"]
    await dead.aclose()


def test_link_is_not_leading_before_its_first_round() -> None:
    link = ClusterLink(Redis(port=1), "pbtest-x", 3.0, 16)
    assert not link.leading and not link.fresh("any")


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("leader_lease_s", "0.1"),
        ("redis_prefix", "has space"),
        ("redis_timeout_s", "0"),
        ("cluster_stream_max_updates", "0"),
        ("workers", "0"),
        ("workers", "65"),
    ],
)
def test_cluster_settings_are_validated(name, value, monkeypatch) -> None:
    from pydantic import ValidationError

    from app.config import Settings

    monkeypatch.setenv(f"PULSEBOARD_{name.upper()}", value)
    with pytest.raises(ValidationError, match=name):
        Settings()


def test_cluster_settings_from_the_environment(monkeypatch) -> None:
    from app.config import Settings

    monkeypatch.setenv("PULSEBOARD_REDIS_URL", "redis://127.0.0.1:6379/3")
    monkeypatch.setenv("PULSEBOARD_LEADER_LEASE_S", "1.5")
    monkeypatch.setenv("PULSEBOARD_CLUSTER_STREAM_MAX_UPDATES", "32")
    monkeypatch.setenv("PULSEBOARD_WORKERS", "4")
    s = Settings()
    assert (s.redis_url, s.leader_lease_s, s.cluster_stream_max_updates, s.workers) == (
        "redis://127.0.0.1:6379/3",
        1.5,
        32,
        4,
    )
    assert Settings.model_fields["leader_lease_s"].default == 3.0


async def test_stream_keeps_the_configured_number_of_updates(redis_prefix) -> None:
    client, prefix = redis_prefix
    publish = client.register_script(_PUBLISH)
    keys = [prefix + ":leader", prefix + ":state:x", prefix + ":stream:x"]
    await client.set(prefix + ":leader", "1")
    for seq in range(1, 8):
        frame = b'{"type":"update","seq":%d}' % seq
        args = ["1", b"{}", frame, 3, "e", seq, prefix + ":tiles", b"h\n" + frame]
        assert await publish(keys=keys, args=args) == 1
    entries = await client.xrange(prefix + ":stream:x")
    assert [int(fields[b"seq"]) for _, fields in entries] == [5, 6, 7]
