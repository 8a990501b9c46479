"""The pool's choices without a network: least outstanding requests, round-robin among equals,
backoff for an instance taken out, and what happens when every instance is out."""

from __future__ import annotations

import time

import aiohttp
import pytest

from app.services.pool import InstancePool


def _session() -> aiohttp.ClientSession:
    raise AssertionError("no request in these tests")


def make_pool(n: int = 3) -> InstancePool:
    return InstancePool(
        [f"http://127.0.0.1:{9000 + i}/v1" for i in range(n)], session=_session, retry_max_s=8
    )


def test_least_outstanding_then_round_robin() -> None:
    pool = make_pool()
    a, b, c = pool.instances
    picks = [pool.pick() for _ in range(6)]
    assert picks == [a, b, c, a, b, c]  # all idle: each in turn
    pool.acquire(a)
    pool.acquire(b)
    assert pool.pick() is c
    pool.acquire(c)
    pool.acquire(c)
    assert pool.pick() in (a, b)
    pool.release(c)
    pool.release(c)
    assert pool.pick() is c
    assert pool.pick(exclude=(c,)) in (a, b)


def test_taken_out_with_backoff_and_back() -> None:
    pool = make_pool()
    b = pool.instances[1]
    pool.mark_down(b, "connection refused")
    assert not b.healthy and b.taken_out == 1
    assert all(pool.pick() is not b for _ in range(10))
    delays = []
    for _ in range(6):
        before = time.monotonic()
        pool.mark_down(b, "health check failed")
        delays.append(round(b.retry_at - before))
    assert delays == [2, 4, 8, 8, 8, 8]  # doubling, capped at retry_max_s
    assert b.taken_out == 1  # one stay out, however many failed probes
    pool.mark_up(b)
    assert b.healthy and b.failures == 0 and b.last_error is None
    assert b in {pool.pick() for _ in range(3)}


def test_every_instance_out_still_tries_the_one_due_first() -> None:
    pool = make_pool(2)
    a, b = pool.instances
    pool.mark_down(a, "connection refused")
    pool.mark_down(a, "connection refused")  # a waits longer than b
    pool.mark_down(b, "connection refused")
    assert pool.pick() is b
    assert pool.pick(exclude=(b,)) is a
    assert pool.pick(exclude=(a, b)) is None


def test_a_pool_needs_an_instance() -> None:
    with pytest.raises(ValueError):
        InstancePool([], session=_session)
