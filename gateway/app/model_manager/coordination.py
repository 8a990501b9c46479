"""Which gateway process acts on the model servers, and how the others follow it (issue 15).

`LocalCoordinator`: used only by tests and embedders that want one process with nothing shared.

`LeaseCoordinator` (any number of gateway processes: uvicorn workers, replicas), on Redis when
`REDIS_URL` is set (`RedisCoordinator`), else on the database every process already shares
(`DatabaseCoordinator`: Postgres, or the SQLite file of several local processes):

- **Lease with fencing.** One holder, with an expiry (`MANAGER_LEASE_TTL_S`, 3 s) renewed every
  TTL/6 by a compare-and-set on the holder's value; each new holder gets a larger `fence`. A
  holder counts itself acting only until `sent + TTL` of its last successful renewal (one cut
  off from the store stops before its lease can pass to another), checks that before every
  runtime action (`check_fence`), and writes the shared state only through a compare on its
  holder value and fence: a holder that lost the lease cannot overwrite its successor's state.
  A holder that dies is replaced when its lease expires (within TTL plus one renewal period);
  one that stops cleanly gives it up and is replaced at once.
- **Shared state.** The holder writes the manager's snapshot at every state event; the others
  apply it (status view, serving profile, and their `ServingGate`: closed while an operation is
  in progress): Redis publishes it (and followers re-read the key every second in case a
  message was lost); the database is polled every 0.2 s (one indexed one-row read).
- **Commands.** A switch asked of a follower is queued for the holder, and its answer (202,
  409, 404, 422, as it would answer itself) awaited; no answer within
  `MANAGER_FORWARD_TIMEOUT_S`: 503 `manager_unavailable` with Retry-After.
- **Drain across processes.** Every process reports its in-flight chat answers (often while
  its gate is closed); before stopping a server the holder waits for every live process to
  report zero, as it waits for its own gate.
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
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from app.core.errors import AppError, ServiceUnavailable
from app.model_manager.state import StaleOperation, iso

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

    async def forward(self, op: str, profile_id: str = "") -> dict[str, Any]: ...

    async def remote_pending(self, switch_key: str) -> int: ...

    async def others_alive(self) -> bool: ...

    def describe(self) -> dict[str, Any]: ...


async def cancel_all(tasks: list[asyncio.Task[None]], timeout_s: float = 3.0) -> None:
    """Cancel the tasks and wait for them, but not forever: a task that swallows its
    cancellation (a client library's read) is left behind with a warning, not waited on."""
    pending = [t for t in tasks if not t.done()]
    for task in pending:
        task.cancel()
    if not pending:
        return
    _, stuck = await asyncio.wait(pending, timeout=timeout_s)
    for task in stuck:
        log.warning("task did not stop when cancelled", task=task.get_name())


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

    async def forward(self, op: str, profile_id: str = "") -> dict[str, Any]:  # pragma: no cover
        raise ManagerUnavailable("no acting model manager")

    async def remote_pending(self, switch_key: str) -> int:
        return 0

    async def others_alive(self) -> bool:
        return False

    def describe(self) -> dict[str, Any]:
        return {"mode": "single", "node": self.node_id, "leader": self.node_id, "fence": None}


class LeaseCoordinator:
    """The lease, the publishing of the state, the commands and the heartbeats; a store
    (Redis, the database) fills in the primitives."""

    mode = "lease"

    def __init__(self, *, lease_ttl_s: float = 3.0, forward_timeout_s: float = 10.0) -> None:
        self.node_id = new_node_id()
        self.ttl_s = max(0.3, lease_ttl_s)
        self.renew_s = self.ttl_s / 6
        self.forward_timeout_s = forward_timeout_s
        self.lease_value: str | None = None
        self.valid_until = 0.0
        self.leader: str | None = None
        self.fence: int | None = None
        self.manager: ModelManager | None = None
        self._snapshot: dict[str, Any] | None = None
        self._dirty = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._seq = 0

    # --- what a store provides ----------------------------------------------------------------
    async def _acquire(self) -> tuple[str, int] | None:
        """Take the lease if it is free or expired: (holder value, fence), else None."""
        raise NotImplementedError

    async def _current_holder(self) -> str | None:
        raise NotImplementedError

    async def _renew(self, value: str) -> bool:
        raise NotImplementedError

    async def _release(self, value: str) -> None:
        raise NotImplementedError

    async def _read_state(self) -> str | None:
        raise NotImplementedError

    async def _write_state(self, value: str, body: str) -> bool:
        """Write the snapshot only while `value` holds the lease."""
        raise NotImplementedError

    async def _follow_loop(self) -> None:
        raise NotImplementedError

    async def _send_command(self, command: dict[str, Any], timeout_s: float) -> str | None:
        """Queue a command for the holder and wait for its answer (None: no answer in time)."""
        raise NotImplementedError

    async def _next_commands(self) -> list[tuple[Any, dict[str, Any]]]:
        """Commands waiting for the holder (blocking up to about a second)."""
        raise NotImplementedError

    async def _answer(self, ref: Any, answer: str) -> None:
        raise NotImplementedError

    async def _beat(self, in_flight: int, closed_for: str | None) -> None:
        raise NotImplementedError

    async def _live_nodes(self) -> dict[str, tuple[int, str | None]]:
        """Every live process: (answers in flight, the switch its gate is closed for)."""
        raise NotImplementedError

    async def _forget_node(self) -> None:
        raise NotImplementedError

    async def _close(self) -> None:
        pass

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
        await cancel_all(self._tasks)
        self._tasks.clear()
        value, self.lease_value = self.lease_value, None
        # bounded: a store that does not answer must not hold the gateway's shutdown
        with contextlib.suppress(Exception):
            async with asyncio.timeout(3.0):
                if value is not None:
                    await self._flush_snapshot(value)
                    await self._release(value)
                await self._forget_node()
        with contextlib.suppress(Exception):
            async with asyncio.timeout(3.0):
                await self._close()

    async def _lease_loop(self) -> None:
        while True:
            try:
                if self.lease_value is None:
                    await self._try_acquire()
                else:
                    sent = time.monotonic()
                    if await self._renew(self.lease_value):
                        self.valid_until = sent + self.ttl_s
                    else:
                        await self._lose("another process holds the lease")
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("model manager lease: store error", error=repr(exc))
            if self.lease_value is not None and not self.acting:
                await self._lose("the lease could not be renewed in time")
            await asyncio.sleep(self.renew_s)

    async def _try_acquire(self) -> None:
        sent = time.monotonic()
        taken = await self._acquire()
        if taken is None:
            holder = await self._current_holder()
            self.leader = holder.split("|")[0] if holder else None
            return
        self.lease_value, self.fence = taken
        self.leader = self.node_id
        self.valid_until = sent + self.ttl_s
        raw = await self._read_state()
        shared = json.loads(raw) if raw else None
        log.warning("model manager lease taken", node=self.node_id, fence=self.fence)
        assert self.manager is not None
        await self.manager.on_elected(shared)
        self.publish(_snapshot(self.manager))

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
            value = self.lease_value
            try:
                if value is not None:
                    await self._flush_snapshot(value)
                else:
                    self._dirty.clear()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("model manager state not shared yet", error=repr(exc))
                await asyncio.sleep(0.2)

    async def _flush_snapshot(self, value: str) -> None:
        self._dirty.clear()
        snapshot = self._snapshot
        if snapshot is None:
            return
        self._seq += 1
        body = json.dumps(
            {**snapshot, "leader": self.node_id, "fence": self.fence, "seq": self._seq}
        )
        if not await self._write_state(value, body) and self.lease_value == value:
            await self._lose("the state write was fenced off")

    def _apply(self, raw: bytes | str | None) -> None:
        if raw is None or self.lease_value is not None or self.manager is None:
            return
        shared = json.loads(raw)
        self.leader, self.fence = shared.get("leader"), shared.get("fence")
        self.manager.apply_shared(shared)

    # --- commands -------------------------------------------------------------------------------
    async def forward(self, op: str, profile_id: str = "") -> dict[str, Any]:
        """Have the holder do `op` (`switch` to `profile_id`, `reload` the profiles) and
        return its answer; its refusal is raised as the same error."""
        command = {
            "id": uuid.uuid4().hex,
            "op": op,
            "profile_id": profile_id,
            "deadline": time.time() + self.forward_timeout_s,
        }
        try:
            reply = await self._send_command(command, self.forward_timeout_s)
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
        answer: dict[str, Any] = json.loads(reply)
        if answer.get("status") == 503:
            raise ManagerUnavailable(
                answer.get("message") or "the model manager changed hands; try again",
                headers={"Retry-After": "5"},
            )
        if int(answer.get("status", 500)) >= 300:
            error = AppError(answer.get("message") or f"{op} refused", extra=answer.get("extra"))
            error.status_code = int(answer["status"])
            error.code = str(answer.get("code"))
            raise error
        return answer

    async def _command_loop(self) -> None:
        assert self.manager is not None
        while True:
            if not self.acting:
                await asyncio.sleep(self.renew_s)
                continue
            try:
                for ref, command in await self._next_commands():
                    answer = await self.manager.handle_command(command)
                    await self._answer(ref, json.dumps(answer))
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("model manager commands: store error", error=repr(exc))
                await asyncio.sleep(0.5)

    # --- processes and their answers in flight ---------------------------------------------------
    async def _heartbeat_loop(self) -> None:
        assert self.manager is not None
        manager, gate = self.manager, self.manager.gate
        beat_now = asyncio.Event()
        manager.machine.listeners.append(lambda _event: beat_now.set())
        gate.on_change = beat_now.set
        while True:
            beat_now.clear()
            try:
                await self._beat(gate.in_flight, closed_for(manager))
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("model manager heartbeat: store error", error=repr(exc))
            # at once when the gate closes or opens, or an answer ends while it is closed
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(beat_now.wait(), 0.05 if not gate.is_open else 1.0)

    async def remote_pending(self, switch_key: str) -> int:
        """What the other live processes still hold up the switch with: one for each that has
        not yet closed its gate for this switch, plus their answers in flight."""
        try:
            nodes = await self._live_nodes()
        except Exception:
            return 0  # the store is down: do not hold a switch on what cannot be read
        return sum(
            (0 if closed == switch_key else 1) + n
            for node, (n, closed) in nodes.items()
            if node != self.node_id
        )

    async def others_alive(self) -> bool:
        try:
            return any(node != self.node_id for node in await self._live_nodes())
        except Exception:
            return False

    def describe(self) -> dict[str, Any]:
        return {"mode": self.mode, "node": self.node_id, "leader": self.leader, "fence": self.fence}


NODE_TTL_S = 3.0

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


class RedisCoordinator(LeaseCoordinator):
    """The lease, state, commands and heartbeats under `{prefix}:mm:*` in Redis: the lease a
    key set NX with a TTL (`holder|fence`, the fence from INCR), the state a key also published
    on a channel, the commands a list with one reply list each, a key with a TTL per process."""

    mode = "redis"

    def __init__(self, url: str, prefix: str, **kw: Any) -> None:
        super().__init__(**kw)
        p = f"{prefix}:mm"
        self.k_lease, self.k_fence, self.k_state = f"{p}:lease", f"{p}:fence", f"{p}:state"
        self.k_events, self.k_commands, self.k_nodes = f"{p}:events", f"{p}:commands", f"{p}:nodes"
        self.k_node_prefix = f"{p}:node:"
        self.k_reply = f"{p}:reply:"
        self.ttl_ms = int(self.ttl_s * 1000)
        # short commands time out fast; blocking reads and the subscription need their own
        self.redis = Redis.from_url(url, socket_connect_timeout=1.0, socket_timeout=2.0)
        self.blocking = Redis.from_url(url, socket_connect_timeout=1.0, socket_timeout=None)

    async def _acquire(self) -> tuple[str, int] | None:
        value = await self.redis.eval(
            ACQUIRE, 2, self.k_lease, self.k_fence, self.node_id, str(self.ttl_ms)
        )
        if value is None:
            return None
        text = _text(value)
        return text, int(text.rsplit("|", 1)[1])

    async def _current_holder(self) -> str | None:
        current = await self.redis.get(self.k_lease)
        return _text(current) if current else None

    async def _renew(self, value: str) -> bool:
        return bool(await self.redis.eval(RENEW, 1, self.k_lease, value, str(self.ttl_ms)) == 1)

    async def _release(self, value: str) -> None:
        await self.redis.eval(RELEASE, 1, self.k_lease, value)

    async def _read_state(self) -> str | None:
        raw = await self.redis.get(self.k_state)
        return _text(raw) if raw else None

    async def _write_state(self, value: str, body: str) -> bool:
        written = await self.redis.eval(
            WRITE_STATE, 3, self.k_lease, self.k_state, self.k_events, value, body
        )
        return bool(written == 1)

    async def _follow_loop(self) -> None:
        """Apply the holder's state at once from the channel, and every second from the key
        (a message lost while reconnecting)."""
        while True:
            pubsub = self.blocking.pubsub()
            try:
                await pubsub.subscribe(self.k_events)
                self._apply(await self.redis.get(self.k_state))
                last_read = time.monotonic()
                while True:
                    message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=1.0)
                    if message is not None and message.get("type") == "message":
                        self._apply(message["data"])
                    if time.monotonic() - last_read >= 1.0:
                        self._apply(await self.redis.get(self.k_state))
                        last_read = time.monotonic()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("model manager state: redis error", error=repr(exc))
                await asyncio.sleep(0.5)
            finally:
                with contextlib.suppress(Exception):
                    await pubsub.aclose()  # type: ignore[no-untyped-call]

    async def _send_command(self, command: dict[str, Any], timeout_s: float) -> str | None:
        await self.redis.rpush(self.k_commands, json.dumps(command))
        reply = await self.blocking.blpop([self.k_reply + command["id"]], timeout=timeout_s)
        return _text(reply[1]) if reply else None

    async def _next_commands(self) -> list[tuple[Any, dict[str, Any]]]:
        item = await self.blocking.blpop([self.k_commands], timeout=1)
        if item is None:
            return []
        command = json.loads(item[1])
        if float(command.get("deadline", 0)) < time.time():
            return []  # its sender has given up
        if not self.acting:  # lost the lease while waiting: leave it to the next holder
            await self.redis.lpush(self.k_commands, item[1])
            return []
        return [(command["id"], command)]

    async def _answer(self, ref: Any, answer: str) -> None:
        key = self.k_reply + str(ref)
        await self.redis.rpush(key, answer)
        await self.redis.expire(key, 60)

    async def _beat(self, in_flight: int, closed_for: str | None) -> None:
        await self.redis.sadd(self.k_nodes, self.node_id)
        await self.redis.set(
            self.k_node_prefix + self.node_id,
            json.dumps([in_flight, closed_for]),
            px=int(NODE_TTL_S * 1000),
        )

    async def _live_nodes(self) -> dict[str, tuple[int, str | None]]:
        members = [_text(m) for m in await self.redis.smembers(self.k_nodes)]
        if not members:
            return {}
        values = await self.redis.mget([self.k_node_prefix + m for m in members])
        live: dict[str, tuple[int, str | None]] = {}
        dead = []
        for member, value in zip(members, values, strict=True):
            if value is None:
                dead.append(member)
            else:
                n, closed = json.loads(value)
                live[member] = (int(n), closed)
        if dead:
            await self.redis.srem(self.k_nodes, *dead)
        return live

    async def _forget_node(self) -> None:
        await self.redis.delete(self.k_node_prefix + self.node_id)
        await self.redis.srem(self.k_nodes, self.node_id)

    async def _close(self) -> None:
        await self.redis.aclose()
        await self.blocking.aclose()


class DatabaseCoordinator(LeaseCoordinator):
    """The same on the database (tables `manager_lease`, `manager_commands`, `manager_nodes`,
    migration 0007): the lease one row updated with a compare on its holder and expiry (the
    database's clock, so processes on several hosts agree), the state a column of that row
    polled every 0.2 s, commands rows the holder answers, a row per process."""

    mode = "database"
    POLL_S = 0.2

    def __init__(self, engine: AsyncEngine, **kw: Any) -> None:
        super().__init__(**kw)
        self.engine = engine
        if engine.dialect.name == "sqlite":
            self.now = "((julianday('now') - 2440587.5) * 86400.0)"
        else:
            self.now = "extract(epoch from clock_timestamp())"
        self._seen_seq: int | None = None

    async def _exec(self, sql: str, **params: Any) -> Any:
        async with self.engine.begin() as conn:
            return await conn.execute(text(sql.replace("{now}", self.now)), params)

    async def _acquire(self) -> tuple[str, int] | None:
        async with self.engine.begin() as conn:
            # the row exists after the migration; a database emptied by hand gets it back
            exists = await conn.execute(text("SELECT 1 FROM manager_lease WHERE id = 1"))
            if exists.first() is None:
                await conn.execute(
                    text(
                        "INSERT INTO manager_lease (id, holder, fence, expires_at, seq) "
                        "VALUES (1, NULL, 0, 0, 0)"
                    )
                )
        result = await self._exec(
            "UPDATE manager_lease SET holder = :me, fence = fence + 1, "
            "expires_at = {now} + :ttl WHERE id = 1 AND (holder IS NULL OR expires_at < {now})",
            me=self.node_id,
            ttl=self.ttl_s,
        )
        if result.rowcount != 1:
            return None
        row = (await self._exec("SELECT holder, fence FROM manager_lease WHERE id = 1")).first()
        if row is None or row[0] != self.node_id:
            return None
        fence = int(row[1])
        return f"{self.node_id}|{fence}", fence

    async def _current_holder(self) -> str | None:
        row = (
            await self._exec("SELECT holder, expires_at > {now} FROM manager_lease WHERE id = 1")
        ).first()
        return str(row[0]) if row is not None and row[0] and row[1] else None

    def _holder(self, value: str) -> dict[str, Any]:
        node, fence = value.rsplit("|", 1)
        return {"me": node, "fence": int(fence)}

    async def _renew(self, value: str) -> bool:
        result = await self._exec(
            "UPDATE manager_lease SET expires_at = {now} + :ttl "
            "WHERE id = 1 AND holder = :me AND fence = :fence",
            ttl=self.ttl_s,
            **self._holder(value),
        )
        return bool(result.rowcount == 1)

    async def _release(self, value: str) -> None:
        await self._exec(
            "UPDATE manager_lease SET holder = NULL, expires_at = 0 "
            "WHERE id = 1 AND holder = :me AND fence = :fence",
            **self._holder(value),
        )

    async def _read_state(self) -> str | None:
        row = (await self._exec("SELECT state FROM manager_lease WHERE id = 1")).first()
        return str(row[0]) if row is not None and row[0] else None

    async def _write_state(self, value: str, body: str) -> bool:
        result = await self._exec(
            "UPDATE manager_lease SET state = :body, seq = seq + 1 "
            "WHERE id = 1 AND holder = :me AND fence = :fence",
            body=body,
            **self._holder(value),
        )
        return bool(result.rowcount == 1)

    async def _follow_loop(self) -> None:
        while True:
            try:
                if self.lease_value is None:
                    row = (
                        await self._exec("SELECT seq, state FROM manager_lease WHERE id = 1")
                    ).first()
                    if row is not None and row[1] and row[0] != self._seen_seq:
                        self._seen_seq = int(row[0])
                        self._apply(row[1])
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("model manager state: database error", error=repr(exc))
                await asyncio.sleep(0.5)
            await asyncio.sleep(self.POLL_S)

    async def _send_command(self, command: dict[str, Any], timeout_s: float) -> str | None:
        result = await self._exec(
            "INSERT INTO manager_commands (op, profile_id, deadline) "
            "VALUES (:op, :profile, {now} + :timeout) RETURNING id",
            op=command["op"],
            profile=command["profile_id"],
            timeout=timeout_s,
        )
        row_id = int(result.scalar_one())
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        try:
            while loop.time() < deadline:
                await asyncio.sleep(0.1)
                row = (
                    await self._exec("SELECT reply FROM manager_commands WHERE id = :id", id=row_id)
                ).first()
                if row is not None and row[0]:
                    return str(row[0])
            return None
        finally:
            with contextlib.suppress(Exception):
                await self._exec("DELETE FROM manager_commands WHERE id = :id", id=row_id)

    async def _next_commands(self) -> list[tuple[Any, dict[str, Any]]]:
        await asyncio.sleep(self.POLL_S)
        if not self.acting:
            return []
        rows = (
            await self._exec(
                "SELECT id, op, profile_id FROM manager_commands "
                "WHERE reply IS NULL AND deadline > {now} ORDER BY id"
            )
        ).all()
        taken = []
        for row_id, op, profile_id in rows:
            # claim it (an empty reply) so that no other process answers it too
            claim = await self._exec(
                "UPDATE manager_commands SET reply = '' WHERE id = :id AND reply IS NULL",
                id=row_id,
            )
            if claim.rowcount == 1:
                command = {"id": int(row_id), "op": op, "profile_id": profile_id}
                taken.append((int(row_id), command))
        return taken

    async def _answer(self, ref: Any, answer: str) -> None:
        await self._exec("UPDATE manager_commands SET reply = :r WHERE id = :id", r=answer, id=ref)

    async def _beat(self, in_flight: int, closed_for: str | None) -> None:
        params = {"me": self.node_id, "n": in_flight, "closed": closed_for}
        result = await self._exec(
            "UPDATE manager_nodes SET in_flight = :n, closed_for = :closed, seen_at = {now} "
            "WHERE node_id = :me",
            **params,
        )
        if result.rowcount == 0:
            await self._exec(
                "INSERT INTO manager_nodes (node_id, in_flight, closed_for, seen_at) "
                "VALUES (:me, :n, :closed, {now})",
                **params,
            )

    async def _live_nodes(self) -> dict[str, tuple[int, str | None]]:
        rows = (
            await self._exec(
                "SELECT node_id, in_flight, closed_for FROM manager_nodes "
                "WHERE seen_at > {now} - :stale",
                stale=NODE_TTL_S,
            )
        ).all()
        return {str(r[0]): (int(r[1]), r[2]) for r in rows}

    async def _forget_node(self) -> None:
        await self._exec("DELETE FROM manager_nodes WHERE node_id = :me", me=self.node_id)
        await self._exec("DELETE FROM manager_nodes WHERE seen_at < {now} - 3600")


def closed_for(manager: ModelManager) -> str | None:
    """The switch this process's gate is closed for (its start time), if it is."""
    switch = manager.machine.switch
    if manager.gate.is_open or switch is None or switch.finished_at is not None:
        return None
    return iso(switch.started_at)


def _snapshot(manager: ModelManager) -> dict[str, Any]:
    from app.model_manager.views import shared_snapshot

    return shared_snapshot(manager)


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
