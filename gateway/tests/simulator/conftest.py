"""Fixtures: the simulator as a real subprocess, and an HTTP client for it."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import httpx
import pytest

from tests.sim_process import SimProcess, start_simulator


@pytest.fixture(scope="module")
def sim(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SimProcess]:
    process = start_simulator(tmp_path_factory.mktemp("sim") / "simulator.log")
    yield process
    process.stop()


@pytest.fixture(autouse=True)
def fresh_state(request: pytest.FixtureRequest) -> None:
    """Zero counters and restore the start-up config before each test that uses ``sim``."""
    if "sim" not in request.fixturenames:
        return
    sim: SimProcess = request.getfixturevalue("sim")
    response = httpx.post(f"{sim.url}/sim/reset", json={"config": True}, timeout=5)
    assert response.status_code == 200


@pytest.fixture
async def client(sim: SimProcess) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=sim.url, timeout=10) as http:
        yield http
