"""The model manager's state and its transitions (SPEC §6).

One `StateMachine` holds the status, the serving profile, the switch record and the one
operation in progress (a first start, a switch, a restart or a takeover). Every change is a
compare-and-swap: `begin` starts an operation only when none is in progress and the status is
one of those expected; `move` changes the status only from an expected status, only for the
operation that owns the machine, and only along the transition table. A change has no `await`
between its compare and its swap, so with asyncio's one thread nothing can run in between: the
event loop is the lock, and a coroutine that resumes after an `await` must compare again (the
supervisor's bug of old: it decided before an await and acted after it). Every change emits a
`StateEvent` that the serving gate, the metrics and the shared state follow.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

import structlog

log = structlog.get_logger()


class ModelStatus(StrEnum):
    STOPPED = "stopped"
    STARTING = "starting"
    LOADING = "loading"
    RUNNING = "running"
    SWITCHING = "switching"
    ERROR = "error"


class SwitchPhase(StrEnum):
    STOPPING = "stopping"
    STARTING = "starting"
    LOADING = "loading"
    RUNNING = "running"
    ROLLING_BACK = "rolling_back"
    FAILED = "failed"


class OpKind(StrEnum):
    BRING_UP = "bring_up"  # the first start, or adopting a running server
    SWITCH = "switch"
    RESTART = "restart"  # the supervisor restarting a server that exited
    TAKEOVER = "takeover"  # a new acting process resolving what the last one left


S = ModelStatus
TRANSITIONS: dict[ModelStatus, frozenset[ModelStatus]] = {
    S.STOPPED: frozenset({S.STARTING, S.SWITCHING}),
    S.STARTING: frozenset({S.LOADING, S.ERROR, S.STOPPED, S.RUNNING}),
    S.LOADING: frozenset({S.RUNNING, S.ERROR, S.STOPPED, S.STARTING}),
    S.RUNNING: frozenset({S.SWITCHING, S.STARTING, S.ERROR, S.STOPPED}),
    S.SWITCHING: frozenset({S.RUNNING, S.ERROR, S.STOPPED}),
    S.ERROR: frozenset({S.SWITCHING, S.STARTING, S.STOPPED}),
}
ANY = frozenset(ModelStatus)


class InvalidTransition(RuntimeError):
    pass


class StaleOperation(RuntimeError):
    """The operation no longer owns the machine (this process lost the lease, or it was
    abandoned): it must stop touching the runtimes and the state."""


def now() -> datetime:
    return datetime.now(UTC)


def iso(moment: datetime | None) -> str | None:
    return moment.isoformat().replace("+00:00", "Z") if moment else None


def parse_iso(text: str | None) -> datetime | None:
    return datetime.fromisoformat(text.replace("Z", "+00:00")) if text else None


@dataclass
class SwitchRecord:
    target: str
    previous: str | None
    phase: SwitchPhase = SwitchPhase.STOPPING
    started_at: datetime = field(default_factory=now)
    finished_at: datetime | None = None
    error: str | None = None
    phases: list[tuple[SwitchPhase, datetime]] = field(default_factory=list)
    started_mono: float = field(default_factory=time.monotonic)
    waited_drain_s: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "target": self.target,
            "previous": self.previous,
            "phase": self.phase.value,
            "started_at": iso(self.started_at),
            "finished_at": iso(self.finished_at),
            "error": self.error,
            "phases": [{"phase": p.value, "at": iso(at)} for p, at in self.phases],
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SwitchRecord:
        started = parse_iso(data.get("started_at")) or now()
        return cls(
            target=data["target"],
            previous=data.get("previous"),
            phase=SwitchPhase(data.get("phase", "stopping")),
            started_at=started,
            finished_at=parse_iso(data.get("finished_at")),
            error=data.get("error"),
            phases=[
                (SwitchPhase(p["phase"]), parse_iso(p["at"]) or started)
                for p in data.get("phases", [])
            ],
            started_mono=time.monotonic() - max(0.0, (now() - started).total_seconds()),
        )


@dataclass(frozen=True)
class Operation:
    kind: OpKind
    id: int


@dataclass(frozen=True)
class StateEvent:
    old: ModelStatus
    new: ModelStatus
    profile: str | None
    operation: OpKind | None
    reason: str


Listener = Callable[[StateEvent], None]


class StateMachine:
    def __init__(self) -> None:
        self.status = ModelStatus.STOPPED
        self.current_profile: str | None = None
        self.switch: SwitchRecord | None = None
        self.op: Operation | None = None
        self.listeners: list[Listener] = []
        self._ids = itertools.count(1)

    @property
    def busy(self) -> bool:
        return self.op is not None

    # --- compare-and-swap ---------------------------------------------------------------------
    def begin(
        self,
        kind: OpKind,
        expected: Iterable[ModelStatus],
        new: ModelStatus | None = None,
        **changes: Any,
    ) -> Operation | None:
        """Start an operation if none is in progress and the status is expected; None if not."""
        if self.op is not None or self.status not in frozenset(expected):
            return None
        if new is not None and new is not self.status and new not in TRANSITIONS[self.status]:
            raise InvalidTransition(f"{self.status.value} -> {new.value}")
        self.op = Operation(kind, next(self._ids))
        self._apply(new, changes, f"begin {kind.value}")
        return self.op

    def move(
        self,
        op: Operation,
        expected: Iterable[ModelStatus],
        new: ModelStatus,
        **changes: Any,
    ) -> None:
        """Change the status for the operation that owns the machine, from an expected status."""
        self.check(op)
        if self.status not in frozenset(expected):
            raise InvalidTransition(
                f"{op.kind.value}: expected {sorted(s.value for s in expected)}, "
                f"found {self.status.value}"
            )
        if new is not self.status and new not in TRANSITIONS[self.status]:
            raise InvalidTransition(f"{self.status.value} -> {new.value}")
        self._apply(new, changes, op.kind.value)

    def update(self, op: Operation, reason: str, **changes: Any) -> None:
        """Change fields (not the status) for the owning operation, and say so."""
        self.check(op)
        self._apply(None, changes, reason)

    def phase(self, op: Operation, phase: SwitchPhase) -> None:
        self.check(op)
        if op.kind in (OpKind.SWITCH, OpKind.TAKEOVER) and self.switch is not None:
            self.switch.phase = phase
            self.switch.phases.append((phase, now()))
            log.info("switch phase", target=self.switch.target, phase=phase.value)
            self._emit(self.status, "phase " + phase.value)

    def finish(self, op: Operation) -> bool:
        """The operation is over (whatever its outcome): the machine is free again."""
        if self.op != op:
            return False
        self.op = None
        self._emit(self.status, f"end {op.kind.value}")
        return True

    def abandon(self) -> Operation | None:
        """Drop the operation in progress without a transition (this process stopped acting)."""
        op, self.op = self.op, None
        if op is not None:
            self._emit(self.status, f"abandon {op.kind.value}")
        return op

    def check(self, op: Operation) -> None:
        if self.op != op:
            raise StaleOperation(f"{op.kind.value} #{op.id} no longer owns the model manager")

    # --- followers: the acting process's state, as it is ----------------------------------------
    def mirror(
        self,
        status: ModelStatus,
        profile: str | None,
        switch: SwitchRecord | None,
        op: OpKind | None,
    ) -> None:
        self.switch = switch
        self.op = Operation(op, 0) if op is not None else None
        self._apply(status, {"current_profile": profile}, "mirror", force=True)

    # --- inside -------------------------------------------------------------------------------
    def _apply(
        self, new: ModelStatus | None, changes: dict[str, Any], reason: str, *, force: bool = False
    ) -> None:
        for name, value in changes.items():
            if name not in ("current_profile", "switch"):
                raise TypeError(f"not a state field: {name}")
            setattr(self, name, value)
        old = self.status
        if new is not None and new is not old:
            if not force:
                log.info("model status", old=old.value, new=new.value, profile=self.current_profile)
            self.status = new
        self._emit(old, reason)

    def _emit(self, old: ModelStatus, reason: str) -> None:
        event = StateEvent(
            old, self.status, self.current_profile, self.op.kind if self.op else None, reason
        )
        for listener in list(self.listeners):
            try:
                listener(event)
            except Exception:  # a listener must not break a transition
                log.exception("state listener failed", reason=reason)
