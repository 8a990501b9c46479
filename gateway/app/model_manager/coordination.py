"""Which gateway process acts on the model servers, and how the others follow it (issue 15).

`LocalCoordinator`: one process (no `REDIS_URL`): it always acts, nothing is shared.

`RedisCoordinator`: any number of gateway processes (uvicorn workers, replicas) on one Redis.

- **Lease with fencing.** `{prefix}:mm:lease` holds `node:fence`, set with NX and a TTL
  (`MANAGER_LEASE_TTL_S`, 3 s) and renewed every `TTL/6` by a compare-and-set script; `fence`
  comes from `INCR {prefix}:mm:fence`, so every holder has a larger one than the last. A holder
  counts itself acting only until `sent + TTL` of its last successful renewal (a holder cut
  from Redis stops before its lease can pass to another), checks that before every runtime
  action (`check_fence`), and writes the shared state only through a script that compares the
  lease value first: a holder that lost the lease cannot overwrite its successor's state. A
  holder that dies is replaced when its key expires (within TTL plus one renewal period); one
  that stops cleanly deletes its key and is replaced at once.
- **Shared state.** The holder writes the manager's snapshot to `{prefix}:mm:state` and
  publishes it on `{prefix}:mm:events` at every state event; the others apply it (their
  status view, their serving profile, and their `ServingGate`: closed while an operation is in
  progress) as it arrives, and re-read the key every second in case a message was lost.
- **Commands.** A switch asked of a follower is pushed onto `{prefix}:mm:commands` and the
  holder's answer (202, 409, 404, 422 as it would answer itself) is awaited on a reply list.
- **Drain across processes.** Every process keeps `{prefix}:mm:node:{id}` (its in-flight chat
  answers, with a TTL) fresh; before stopping a server the holder waits for every live process
  to report zero, as it waits for its own gate.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import socket
import time
import uuid
from typing import TYPE_CHECKING, Any, Protocol

import structlog
from redis.asyncio import Redis

from app.core.errors import AppError, ServiceUnavailable
from app.model_manager.state import StaleOperation

if TYPE_CHECKING:
    from app.model_manager.manager import ModelManager

log = structlog.get_logger()


class ManagerUnavailable(ServiceUnavailable):
    code = "manager_unavailable"


class Coordinator(Protocol):
    node_id: str

    @property
    def acting(self) -> bool: ...

    async def start(self, manager: ModelManager) -> None: ...

    async def stop(self) -> None: ...

    def publish(self, snapshot: dict[str, Any]) -> None: ...

    def check_fence(self) -> None: ...

    async def forward_switch(self, profile_id: str) -> dict[str, Any]: ...

    async def remote_in_flight(self) -> int: ...

    async def others_alive(self) -> bool: ...

    def describe(self) -> dict[str, Any]: ...


def new_node_id() -> str:
    return f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"


class LocalCoordinator:
    """One gateway process: it acts, alone."""

    def __init__(self) -> None:
        self.node_id = new_node_id()

    @property
    def acting(self) -> bool:
        return True

    async def start(self, manager: ModelManager) -> None:
        await manager.on_elected(None)

    async def stop(self) -> None:
        pass

    def publish(self, snapshot: dict[str, Any]) -> None:
        pass

    def check_fence(self) -> None:
        pass

    async def forward_switch(self, profile_id: str) -> dict[str, Any]:  # pragma: no cover
        raise ManagerUnavailable("no acting model manager")

    async def remote_in_flight(self) -> int:
        return 0

    async def others_alive(self) -> bool:
        return False

    def describe(self) -> dict[str, Any]:
        return {"mode": "single", "node": self.node_id, "leader": self.node_id, "fence": None}


ACQUIRE = """
if redis.call('exists', KEYS[1]) == 1 then return false end
local fence = redis.call('incr', KEYS[2])
local value = ARGV[1] .. '|' .. fence
redis.call('set', KEYS[1], value, 'PX', ARGV[2])
return value
"""
RENEW = """
if redis.call('get', KEYS[1]) == ARGV[1] then
  redis.call('pexpire', KEYS[1], ARGV[2])
  return 1
end
return 0
"""
RELEASE = """
if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) end
return 0
"""
WRITE_STATE = """
if redis.call('get', KEYS[1]) ~= ARGV[1] then return 0 end
redis.call('set', KEYS[2], ARGV[2])
redis.call('publish', KEYS[3], ARGV[2])
return 1
"""


class RedisCoordinator:
    def __init__(
        self,
        url: str,
        prefix: str,
        *,
        lease_ttl_s: float = 3.0,
        forward_timeout_s: float = 10.0,
    ) -> None:
        self.node_id = new_node_id()
        self.url = url
        self.ttl_ms = max(300, int(lease_ttl_s * 1000))
        self.renew_s = self.ttl_ms / 6000
        self.forward_timeout_s = forward_timeout_s
        p = f"{prefix}:mm"
        self.k_lease, self.k_fence, self.k_state = f"{p}:lease", f"{p}:fence", f"{p}:state"
        self.k_events, self.k_commands, self.k_nodes = f"{p}:events", f"{p}:commands", f"{p}:nodes"
        self.k_node = f"{p}:node:{self.node_id}"
        self.k_reply = f"{p}:reply:"
        # short commands time out fast; blocking reads and the subscription need their own
        self.redis = Redis.from_url(url, socket_connect_timeout=1.0, socket_timeout=2.0)
        self.blocking = Redis.from_url(url, socket_connect_timeout=1.0, socket_timeout=None)
        self.lease_value: str | None = None
        self.valid_until = 0.0
        self.leader: str | None = None
        self.fence: int | None = None
        self.manager: ModelManager | None = None
        self._snapshot: dict[str, Any] | None = None
        self._dirty = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._seq = 0
        self.elected_at: float | None = None

    # --- the lease --------------------------------------------------------------------------------
    @property
    def acting(self) -> bool:
        return self.lease_value is not None and time.monotonic() < self.valid_until

    def check_fence(self) -> None:
        if not self.acting:
            raise StaleOperation("this process no longer holds the model manager lease")

    async def start(self, manager: ModelManager) -> None:
        self.manager = manager
        loop = asyncio.get_running_loop()
        for name, job in (
            ("lease", self._lease_loop()),
            ("follow", self._follow_loop()),
            ("publish", self._publish_loop()),
            ("commands", self._command_loop()),
            ("heartbeat", self._heartbeat_loop()),
        ):
            self._tasks.append(loop.create_task(job, name=f"manager-{name}"))

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._tasks.clear()
        with contextlib.suppress(Exception):
            if self.lease_value is not None:
                await self._flush_snapshot()
                await self.redis.eval(RELEASE, 1, self.k_lease, self.lease_value)
            await self.redis.delete(self.k_node)
            await self.redis.srem(self.k_nodes, self.node_id)
        self.lease_value = None
        await self.redis.aclose()
        await self.blocking.aclose()

    async def _lease_loop(self) -> None:
        assert self.manager is not None
        while True:
            try:
                if self.lease_value is None:
                    await self._try_acquire()
                else:
                    await self._renew()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("model manager lease: redis error", error=repr(exc))
            if self.lease_value is not None and not self.acting:
                await self._lose("the lease could not be renewed in time")
            await asyncio.sleep(self.renew_s)

    async def _try_acquire(self) -> None:
        sent = time.monotonic()
        value = await self.redis.eval(
            ACQUIRE, 2, self.k_lease, self.k_fence, self.node_id, str(self.ttl_ms)
        )
        if value is None:
            current = await self.redis.get(self.k_lease)
            self.leader = _text(current).split("|")[0] if current else None
            return
        self.lease_value = _text(value)
        self.fence = int(self.lease_value.rsplit("|", 1)[1])
        self.leader = self.node_id
        self.valid_until = sent + self.ttl_ms / 1000
        self.elected_at = time.time()
        raw = await self.redis.get(self.k_state)
        shared = json.loads(raw) if raw else None
        log.warning("model manager lease taken", node=self.node_id, fence=self.fence)
        assert self.manager is not None
        await self.manager.on_elected(shared)
        if shared is None or not self.manager.busy:
            self.publish(_snapshot(self.manager))

    async def _renew(self) -> None:
        assert self.lease_value is not None
        sent = time.monotonic()
        ok = await self.redis.eval(RENEW, 1, self.k_lease, self.lease_value, str(self.ttl_ms))
        if ok == 1:
            self.valid_until = sent + self.ttl_ms / 1000
        else:
            await self._lose("another process holds the lease")

    async def _lose(self, why: str) -> None:
        log.error("model manager lease lost", node=self.node_id, fence=self.fence, reason=why)
        self.lease_value = None
        self.leader = None
        assert self.manager is not None
        await self.manager.on_lost()

    # --- shared state -----------------------------------------------------------------------------
    def publish(self, snapshot: dict[str, Any]) -> None:
        self._snapshot = snapshot
        self._dirty.set()

    async def _publish_loop(self) -> None:
        while True:
            await self._dirty.wait()
            try:
                await self._flush_snapshot()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("model manager state not shared yet", error=repr(exc))
                await asyncio.sleep(0.2)

    async def _flush_snapshot(self) -> None:
        self._dirty.clear()
        snapshot, value = self._snapshot, self.lease_value
        if snapshot is None or value is None:
            return
        self._seq += 1
        body = json.dumps(
            {**snapshot, "leader": self.node_id, "fence": self.fence, "seq": self._seq}
        )
        written = await self.redis.eval(
            WRITE_STATE, 3, self.k_lease, self.k_state, self.k_events, value, body
        )
        if written != 1 and self.lease_value == value:
            await self._lose("the state write was fenced off")

    async def _follow_loop(self) -> None:
        """Followers apply the holder's state: at once from the channel, and every second from
        the key (a message lost while reconnecting)."""
        assert self.manager is not None
        while True:
            pubsub = self.blocking.pubsub()
            try:
                await pubsub.subscribe(self.k_events)
                await self._apply(await self.redis.get(self.k_state))
                last_read = time.monotonic()
                while True:
                    message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=1.0)
                    if message is not None and message.get("type") == "message":
                        await self._apply(message["data"])
                    if time.monotonic() - last_read >= 1.0:
                        await self._apply(await self.redis.get(self.k_state))
                        last_read = time.monotonic()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("model manager state: redis error", error=repr(exc))
                await asyncio.sleep(0.5)
            finally:
                with contextlib.suppress(Exception):
                    await pubsub.aclose()  # type: ignore[no-untyped-call]

    async def _apply(self, raw: bytes | str | None) -> None:
        if raw is None or self.lease_value is not None or self.manager is None:
            return
        shared = json.loads(raw)
        self.leader, self.fence = shared.get("leader"), shared.get("fence")
        self.manager.apply_shared(shared)

    # --- commands -------------------------------------------------------------------------------
    async def forward_switch(self, profile_id: str) -> dict[str, Any]:
        request_id = uuid.uuid4().hex
        reply_key = self.k_reply + request_id
        deadline = time.time() + self.forward_timeout_s
        command = {"id": request_id, "profile_id": profile_id, "deadline": deadline}
        try:
            await self.redis.rpush(self.k_commands, json.dumps(command))
            reply = await self.blocking.blpop([reply_key], timeout=self.forward_timeout_s)
        except Exception as exc:
            raise ManagerUnavailable(
                f"the model manager cannot be reached ({type(exc).__name__})",
                headers={"Retry-After": "5"},
            ) from exc
        if reply is None:
            raise ManagerUnavailable(
                "no gateway process is acting as the model manager right now; try again",
                headers={"Retry-After": "5"},
            )
        answer: dict[str, Any] = json.loads(reply[1])
        if answer.get("status") != 202:
            error = AppError(answer.get("message") or "switch refused", extra=answer.get("extra"))
            error.status_code = int(answer["status"])
            error.code = str(answer.get("code"))
            raise error
        switch: dict[str, Any] = answer["switch"]
        return switch

    async def _command_loop(self) -> None:
        assert self.manager is not None
        while True:
            if not self.acting:
                await asyncio.sleep(self.renew_s)
                continue
            try:
                item = await self.blocking.blpop([self.k_commands], timeout=1)
                if item is None:
                    continue
                command = json.loads(item[1])
                if float(command.get("deadline", 0)) < time.time():
                    continue  # its sender has given up
                if not self.acting:  # lost the lease while waiting: hand it back
                    await self.redis.lpush(self.k_commands, item[1])
                    continue
                answer = await self.manager.handle_command(command)
                reply_key = self.k_reply + str(command["id"])
                await self.redis.rpush(reply_key, json.dumps(answer))
                await self.redis.expire(reply_key, 60)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("model manager commands: redis error", error=repr(exc))
                await asyncio.sleep(0.5)

    # --- processes and their answers in flight ---------------------------------------------------
    async def _heartbeat_loop(self) -> None:
        assert self.manager is not None
        gate = self.manager.gate
        ttl_ms = max(self.ttl_ms, 3000)
        while True:
            try:
                await self.redis.sadd(self.k_nodes, self.node_id)
                await self.redis.set(self.k_node, str(gate.in_flight), px=ttl_ms)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("model manager heartbeat: redis error", error=repr(exc))
            # while a switch waits for the answers to drain, report them often
            await asyncio.sleep(0.05 if not gate.is_open else min(1.0, ttl_ms / 3000))

    async def _live_nodes(self) -> dict[str, int]:
        members = [_text(m) for m in await self.redis.smembers(self.k_nodes)]
        if not members:
            return {}
        prefix = self.k_node.rsplit(":", 1)[0]
        values = await self.redis.mget([f"{prefix}:{m}" for m in members])
        live, dead = {}, []
        for member, value in zip(members, values, strict=True):
            if value is None:
                dead.append(member)
            else:
                live[member] = int(value)
        if dead:
            await self.redis.srem(self.k_nodes, *dead)
        return live

    async def remote_in_flight(self) -> int:
        try:
            nodes = await self._live_nodes()
        except Exception:
            return 0  # Redis down: do not hold a switch on what cannot be read
        return sum(n for node, n in nodes.items() if node != self.node_id)

    async def others_alive(self) -> bool:
        try:
            return any(node != self.node_id for node in await self._live_nodes())
        except Exception:
            return False

    def describe(self) -> dict[str, Any]:
        return {
            "mode": "redis",
            "node": self.node_id,
            "leader": self.leader,
            "fence": self.fence,
        }


def _snapshot(manager: ModelManager) -> dict[str, Any]:
    from app.model_manager.views import shared_snapshot

    return shared_snapshot(manager)


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
