"""Supervision: restart a server that exits on its own (seed 002 §7.7: exit 1, NCCL), with
backoff, and never against an operation that began while we were awaiting; an external server
left in `error` (not ready in time) is looked at again and followed back to `running`."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

import structlog

from app.core.metrics import MODEL_SERVER_RESTARTS
from app.model_manager.state import ModelStatus, OpKind

if TYPE_CHECKING:
    from app.model_manager.manager import ModelManager

log = structlog.get_logger()


async def supervise(manager: ModelManager) -> None:
    failures = 0
    machine = manager.machine
    external_wait_s, next_external_check = 1.0, 0.0
    loop = asyncio.get_running_loop()
    while True:
        await asyncio.sleep(manager.supervise_interval_s)
        if manager.acting and not machine.busy and machine.status is ModelStatus.ERROR:
            # an external server that was not ready in time (a Kubernetes vLLM still pulling
            # its image): look again, with backoff, and come back to running when it answers
            if loop.time() >= next_external_check:
                if await manager.recover_external():
                    external_wait_s = 1.0
                else:
                    external_wait_s = min(30.0, external_wait_s * 2)
                next_external_check = loop.time() + external_wait_s
            continue
        external_wait_s, next_external_check = 1.0, 0.0
        runtime = manager.active
        if (
            not manager.acting
            or runtime is None
            or machine.busy
            or machine.status is not ModelStatus.RUNNING
        ):
            continue
        alive = await runtime.alive()
        if alive:
            failures = 0
            continue
        profile_id = machine.current_profile
        if runtime is not manager.active or profile_id not in manager.profiles:
            continue
        # compare again after the await, and take the machine in the same step: a switch that
        # began meanwhile owns it and this restart does not happen
        if failures + 1 > manager.settings.model_restart_max:
            op = machine.begin(OpKind.RESTART, {ModelStatus.RUNNING}, ModelStatus.ERROR)
            if op is None:
                continue
            detail = runtime.exit_detail() or "exited"
            manager.restarts += 1
            MODEL_SERVER_RESTARTS.inc()
            manager.active = None
            manager.log_tail = await runtime.log_tail()
            manager.failed(f"the model server keeps exiting ({detail}); not restarting")
            machine.finish(op)
            continue
        op = machine.begin(OpKind.RESTART, {ModelStatus.RUNNING}, ModelStatus.STARTING)
        if op is None:
            log.info("model server exit seen during another operation; leaving it to that one")
            continue
        failures += 1
        detail = runtime.exit_detail() or "exited"
        manager.restarts += 1
        MODEL_SERVER_RESTARTS.inc()
        log.error("model server exited unexpectedly", profile=profile_id, detail=detail)
        manager.run_op(
            op,
            manager.restart_steps(op, profile_id, detail, delay_s=min(30.0, 2.0 ** (failures - 1))),
        )
