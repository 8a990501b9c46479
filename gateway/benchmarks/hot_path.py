"""The hot path against its references, interleaved in one run (issue 17).

    cd gateway && .venv/bin/python -m benchmarks.hot_path [--rounds 3] [--seconds 4]
        [--concurrency 32 128] [--also LABEL=/other/checkout/gateway ...]
        [--skip-ttft] [--skip-streams] [--skip-ui] [--skip-workers]

Targets, all fed by one simulator and driven by one load generator (`simulator.bench`, its own
process, closed-loop keep-alive SSE clients):

- direct: the simulator itself;
- nginx: Debian's nginx (1 worker, keep-alive upstream, `proxy_buffering off`), when installed;
- bare: FastAPI + aiohttp streaming passthrough (`benchmarks.bare_passthrough`, 1 uvicorn worker);
- gateway: this checkout, 1 worker, JWT, Redis limits (set never to refuse), usage rows on
  Postgres, INFO access log; `--also` adds gateways from other checkouts (same virtualenv).

Every measurement waits for the load gate first: the machine's CPU (from /proc/stat, everything
but our idle servers) must be at most `--gate-busy` busy, or `--gate-wait` seconds pass; the
readings are printed. Each round runs every target once, in a rotated order; ratios are taken
within a round (paired) and the median over rounds is printed. CPU per request is the server
process's utime+stime (/proc/PID/stat, nginx: its worker) over the measured window / requests.

Sections: throughput at `--concurrency` (16-chunk answers, no upstream delay); TTFT at c64 with
realistic timing (50 ms to the first token, 10 ms per token, 64 chunks); `--streams` concurrent
streams (100 tokens at 50 ms: ideal 5.0 s) with errors and the gateway's peak RSS; `/api/chat`
with persistence at c32; `--workers 2` against 1 worker, each pinned with `taskset`.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from benchmarks.chat_gateway import (
    GATEWAY_DIR,
    LINE,
    PY,
    bare_passthrough,
    gateway,
    postgres_database,
    process,
    rss_mb,
    simulator,
    token,
    wait_http,
)
from tests.ports import free_port

REDIS_URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/0")


# --- the load gate --------------------------------------------------------------------------------
def _cpu_times() -> tuple[int, int]:
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + fields[4]  # idle + iowait
    return sum(fields[:8]) - idle, sum(fields[:8])


def machine_busy(sample_s: float = 0.5) -> float:
    """The share of all CPUs busy over `sample_s` (0..1)."""
    busy0, total0 = _cpu_times()
    time.sleep(sample_s)
    busy1, total1 = _cpu_times()
    return (busy1 - busy0) / max(1, total1 - total0)


@dataclass
class Gate:
    max_busy: float
    wait_s: float
    readings: list[float] = field(default_factory=list)
    passed: int = 0
    forced: int = 0

    def wait(self) -> None:
        """Until the machine is quiet enough, or the deadline: the last reading is kept."""
        deadline = time.monotonic() + self.wait_s
        while True:
            busy = machine_busy()
            if busy <= self.max_busy:
                self.passed += 1
                break
            if time.monotonic() >= deadline:
                self.forced += 1
                break
        self.readings.append(busy)

    def summary(self) -> str:
        if not self.readings:
            return "load gate: no readings"
        r = sorted(self.readings)
        return (
            f"load gate (machine busy before each run, limit {self.max_busy:.0%}, wait up to "
            f"{self.wait_s:.0f} s): {len(r)} runs, median {statistics.median(r):.0%}, "
            f"max {r[-1]:.0%}; {self.passed} passed, {self.forced} ran after the wait"
        )


# --- targets --------------------------------------------------------------------------------------
@dataclass
class Target:
    label: str
    url: str
    token: str | None = None
    cpu_pids: tuple[int, ...] = ()


def children(pid: int) -> list[int]:
    kids: list[int] = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        text = (task / "children").read_text().split()
        kids += [int(x) for x in text]
    return kids


@contextlib.contextmanager
def nginx(tmp: Path, upstream: str) -> Iterator[Target]:
    """Debian's nginx as a plain streaming reverse proxy in front of `upstream`."""
    binary = shutil.which("nginx") or "/usr/sbin/nginx"
    port = free_port()
    root = tmp / f"nginx-{port}"
    root.mkdir()
    host_port = upstream.removeprefix("http://")
    conf = root / "nginx.conf"
    temp = "".join(
        f"  {kind}_temp_path {root}/{kind};\n"
        for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    )
    conf.write_text(
        f"""worker_processes 1;
daemon off;
pid {root}/nginx.pid;
error_log {root}/error.log warn;
events {{ worker_connections 8192; }}
http {{
  access_log off;
{temp}  upstream model {{ server {host_port}; keepalive 512; }}
  server {{
    listen 127.0.0.1:{port};
    location / {{
      proxy_pass http://model;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_buffering off;
      proxy_read_timeout 300s;
    }}
  }}
}}
"""
    )
    with process(
        [binary, "-p", str(root), "-c", str(conf)], dict(os.environ), root / "out.log"
    ) as p:
        url = f"http://127.0.0.1:{port}"
        wait_http(f"{url}/health")
        yield Target("nginx", url, cpu_pids=tuple(children(p.pid)) or (p.pid,))


def gateway_env() -> dict[str, str]:
    return {
        "REDIS_URL": REDIS_URL,
        "RATE_LIMIT_KEY_PREFIX": f"bench-{uuid.uuid4().hex[:8]}",
    }


@contextlib.contextmanager
def stack(
    tmp: Path, sim_args: list[str], others: dict[str, Path], with_nginx: bool
) -> Iterator[list[Target]]:
    """The simulator, the references in front of it, this gateway and the `others`."""
    with contextlib.ExitStack() as es:
        sim = es.enter_context(simulator(tmp, *sim_args))
        sim_pid = _pid_listening(sim)
        targets = [Target("direct", sim, cpu_pids=(sim_pid,) if sim_pid else ())]
        if with_nginx:
            targets.append(es.enter_context(nginx(tmp, sim)))
        bare = es.enter_context(bare_passthrough(tmp, sim))
        bare_pid = _pid_listening(bare)
        targets.append(Target("bare", bare, cpu_pids=(bare_pid,) if bare_pid else ()))
        for label, cwd in {"gateway": GATEWAY_DIR, **others}.items():
            db = es.enter_context(postgres_database())
            url, pid = es.enter_context(gateway(tmp, sim, db, cwd, 1, (), **gateway_env()))
            targets.append(Target(label, url, token(url), (pid,)))
        yield targets


def _pid_listening(url: str) -> int | None:
    """The pid of the process listening on `url`'s port (from /proc/net/tcp and the fds)."""
    port = int(url.rsplit(":", 1)[1])
    inodes = set()
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        parts = line.split()
        if parts[3] == "0A" and int(parts[1].split(":")[1], 16) == port:
            inodes.add(parts[9])
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            for fd in (proc / "fd").iterdir():
                link = os.readlink(fd)
                if link.startswith("socket:[") and link[8:-1] in inodes:
                    return int(proc.name)
        except OSError:
            continue
    return None


# --- load -----------------------------------------------------------------------------------------
def load(
    target: Target,
    concurrency: int,
    seconds: float,
    *,
    path: str = "/v1/chat/completions",
    warmup: float = 1.0,
    prefix: tuple[str, ...] = (),
) -> dict[str, float]:
    args = [*prefix, PY, "-m", "simulator.bench", "--url", target.url]
    args += ["--concurrency", str(concurrency), "--seconds", str(seconds)]
    args += ["--warmup", str(warmup), "--model", "simulator-model", "--path", path]
    if target.token:
        args += ["--token", target.token]
    for pid in target.cpu_pids:
        args += ["--cpu-pid", str(pid)]
    out = subprocess.run(
        args, cwd=GATEWAY_DIR, capture_output=True, text=True, check=True, timeout=seconds + 120
    ).stdout
    line = next(x for x in out.splitlines() if x.startswith("concurrency="))
    return {k: float(v) for k, v, _ in LINE.findall(line)}


def rounds_of(
    targets: list[Target], gate: Gate, rounds: int, concurrency: int, seconds: float
) -> dict[str, list[dict[str, float]]]:
    results: dict[str, list[dict[str, float]]] = {t.label: [] for t in targets}
    for r in range(rounds):
        order = targets[r % len(targets) :] + targets[: r % len(targets)]
        for target in order:
            gate.wait()
            results[target.label].append(load(target, concurrency, seconds))
    return results


def _median(values: list[float]) -> float:
    values = [v for v in values if v == v]  # drop NaN
    return statistics.median(values) if values else float("nan")


def _paired_ratio(a: list[dict[str, float]], b: list[dict[str, float]], key: str) -> float:
    return _median([x[key] / y[key] for x, y in zip(a, b, strict=True) if y[key]])


def _paired_diff(a: list[dict[str, float]], b: list[dict[str, float]], key: str) -> float:
    return _median([x[key] - y[key] for x, y in zip(a, b, strict=True)])


def throughput_table(
    targets: list[Target], gate: Gate, levels: list[int], rounds: int, seconds: float
) -> None:
    labels = [t.label for t in targets]
    gateways = [t.label for t in targets if t.token]
    head = " | ".join(labels)
    ratio_head = " | ".join(f"{g}/bare" for g in gateways)
    print(f"\n| load | {head} | {ratio_head} |", flush=True)
    print("|---" * (1 + len(labels) + len(gateways)) + "|")
    for c in levels:
        res = rounds_of(targets, gate, rounds, c, seconds)
        rps = " | ".join(f"{_median([r['rps'] for r in res[x]]):,.0f}" for x in labels)
        ratios = " | ".join(f"{_paired_ratio(res[g], res['bare'], 'rps'):.2f}" for g in gateways)
        print(f"| c{c}, 16 chunks: req/s | {rps} | {ratios} |")
        cpu = " | ".join(
            "-"
            if x == "direct"
            else f"{_median([r.get('cpu_ms_per_req', float('nan')) for r in res[x]]):.2f} ms"
            for x in labels
        )
        cpu_ratio = " | ".join(
            f"{_paired_ratio(res[g], res['bare'], 'cpu_ms_per_req'):.2f}" for g in gateways
        )
        print(f"| c{c}: CPU per request | {cpu} | {cpu_ratio} |")
        errors = " | ".join(f"{sum(r['errors'] for r in res[x]):.0f}" for x in labels)
        print(f"| c{c}: errors | {errors} | |", flush=True)


def ttft_table(targets: list[Target], gate: Gate, rounds: int, seconds: float) -> None:
    labels = [t.label for t in targets]
    res = rounds_of(targets, gate, rounds, 64, seconds)
    print("\n| c64, 50 ms to first token, 10 ms/token, 64 chunks | " + " | ".join(labels) + " |")
    print("|---" * (1 + len(labels)) + "|")
    for q in ("p50", "p99"):
        cells = " | ".join(f"{_median([r[f'ttft_{q}'] for r in res[x]]):.1f} ms" for x in labels)
        print(f"| TTFT {q} | {cells} |")
        added = " | ".join(
            "-" if x == "direct" else f"+{_paired_diff(res[x], res['direct'], f'ttft_{q}'):.1f} ms"
            for x in labels
        )
        print(f"| TTFT {q} added over direct | {added} |")
    rps = " | ".join(f"{_median([r['rps'] for r in res[x]]):,.0f}" for x in labels)
    print(f"| req/s | {rps} |")
    errors = " | ".join(f"{sum(r['errors'] for r in res[x]):.0f}" for x in labels)
    print(f"| errors | {errors} |", flush=True)


def many_streams(tmp: Path, streams: int, seconds: float) -> None:
    tokens, itl = 100, 50
    ideal = tokens * itl
    sim_args = ["--itl-ms", str(itl), "--tokens", str(tokens)]
    env = gateway_env() | {"UPSTREAM_MAX_CONNECTIONS": str(streams + 200), "DB_POOL_SIZE": "20"}
    with (
        simulator(tmp, *sim_args) as sim,
        postgres_database() as db,
        gateway(tmp, sim, db, GATEWAY_DIR, 1, (), **env) as (url, pid),
    ):
        target = Target("gateway", url, token(url), (pid,))
        peak = [0.0]
        stop = threading.Event()

        def watch() -> None:
            while not stop.is_set():
                peak[0] = max(peak[0], rss_mb(pid)[0])
                time.sleep(0.2)

        watcher = threading.Thread(target=watch, daemon=True)
        watcher.start()
        try:
            result = load(target, streams, seconds, warmup=0)
        finally:
            stop.set()
            watcher.join()
        p50 = result["latency_p50"]
        print(
            f"\n{streams} concurrent streams ({tokens} tokens at {itl} ms): ok={result['ok']:.0f} "
            f"errors={result['errors']:.0f} latency p50={p50:.0f} ms vs ideal {ideal} ms "
            f"({p50 / ideal:.3f} x), p99={result['latency_p99']:.0f} ms; gateway peak RSS "
            f"{peak[0]:.0f} MB",
            flush=True,
        )


def ui_chat(target: Target, gate: Gate, rounds: int, seconds: float) -> None:
    res = []
    for _ in range(rounds):
        gate.wait()
        res.append(load(target, 32, seconds, path="/api/chat"))
    print(
        f"\n/api/chat with persistence (a new conversation per request), c32: "
        f"{_median([r['rps'] for r in res]):,.0f} req/s, errors={sum(r['errors'] for r in res):.0f}"
        f", TTFT p50 {_median([r['ttft_p50'] for r in res]):.1f} ms",
        flush=True,
    )


def workers_comparison(
    tmp: Path, gate: Gate, rounds: int, seconds: float, gw_cpus: str, load_cpus: str
) -> None:
    """1 worker pinned to the first of `gw_cpus`, 2 workers pinned to `gw_cpus`; the simulator
    and the load generator pinned to `load_cpus`. On a 2-CPU machine (the defaults) one worker
    has CPU 1 to itself and the second worker shares CPU 0 with the load: the ratio then
    understates what a second worker gives with the load generator elsewhere."""
    one_cpu = gw_cpus.split(",")[0].split("-")[0]
    pin_load = ("taskset", "-c", load_cpus)
    print(
        f"\n--workers 2 vs 1 (gateway: 1 worker on CPU {one_cpu}, 2 workers on CPUs {gw_cpus}; "
        f"simulator and load generator on CPUs {load_cpus}; {os.cpu_count()} CPUs here)"
    )
    with contextlib.ExitStack() as es:
        sim = es.enter_context(_pinned_sim(tmp, load_cpus))
        targets = []
        for workers, cpus in ((1, one_cpu), (2, gw_cpus)):
            db = es.enter_context(postgres_database())
            url, pid = es.enter_context(
                gateway(
                    tmp, sim, db, workers=workers, prefix=("taskset", "-c", cpus), **gateway_env()
                )
            )
            # `serve` with 2 workers is uvicorn's supervisor: the workers are its children
            pids = (pid, *children(pid)) if workers > 1 else (pid,)
            targets.append(Target(f"{workers}w", url, token(url), tuple(_all_descendants(pids))))
        results: dict[str, list[float]] = {t.label: [] for t in targets}
        for _ in range(rounds):
            for t in targets:
                gate.wait()
                results[t.label].append(load(t, 64, seconds, prefix=pin_load)["rps"])
        one, two = _median(results["1w"]), _median(results["2w"])
        ratio = _median([b / a for a, b in zip(results["1w"], results["2w"], strict=True) if a])
        print(
            f"c64 /v1 streams: 1 worker {one:,.0f} req/s, 2 workers {two:,.0f} req/s: x{ratio:.2f}"
        )


def _all_descendants(pids: tuple[int, ...]) -> list[int]:
    seen: list[int] = []
    todo = list(pids)
    while todo:
        pid = todo.pop()
        if pid in seen:
            continue
        seen.append(pid)
        with contextlib.suppress(OSError):
            todo += children(pid)
    return seen


@contextlib.contextmanager
def _pinned_sim(tmp: Path, cpus: str) -> Iterator[str]:
    port = free_port()
    args = ["taskset", "-c", cpus, PY, "-m", "simulator", "--port", str(port)]
    with process(args, dict(os.environ), tmp / f"sim-{port}.log"):
        url = f"http://127.0.0.1:{port}"
        wait_http(f"{url}/health")
        yield url


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.hot_path")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=4)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[32, 128])
    parser.add_argument(
        "--also",
        action="append",
        default=[],
        metavar="LABEL=DIR",
        help="another checkout's gateway/ directory to measure in the same rounds",
    )
    parser.add_argument("--gate-busy", type=float, default=0.35, help="max machine CPU share")
    parser.add_argument("--gate-wait", type=float, default=10, help="seconds to wait for it")
    parser.add_argument("--no-nginx", action="store_true")
    parser.add_argument("--skip-throughput", action="store_true")
    parser.add_argument("--skip-ttft", action="store_true")
    parser.add_argument("--skip-streams", action="store_true")
    parser.add_argument("--skip-ui", action="store_true")
    parser.add_argument("--skip-workers", action="store_true")
    parser.add_argument("--streams", type=int, default=1000)
    parser.add_argument("--streams-seconds", type=float, default=12)
    parser.add_argument(
        "--gateway-cpus",
        default="1,0",
        help="--workers run: 1 worker is pinned to the first CPU listed, 2 workers to all",
    )
    parser.add_argument("--load-cpus", default="0", help="--workers run: simulator + load")
    args = parser.parse_args(argv)
    others = {}
    for spec in args.also:
        label, _, directory = spec.partition("=")
        others[label] = Path(directory).resolve()
    with_nginx = not args.no_nginx and bool(
        shutil.which("nginx") or Path("/usr/sbin/nginx").exists()
    )
    tmp = Path(tempfile.mkdtemp(prefix="gw-hot-path-"))
    gate = Gate(args.gate_busy, args.gate_wait)
    print(
        f"logs in {tmp}; {os.cpu_count()} CPUs; nginx: {'yes' if with_nginx else 'not installed'}"
    )
    if not args.skip_throughput or not args.skip_ui:
        with stack(tmp, [], others, with_nginx) as targets:
            if not args.skip_throughput:
                print("\n== /v1/chat/completions, 16-chunk streams, no upstream delay ==")
                throughput_table(targets, gate, args.concurrency, args.rounds, args.seconds)
            if not args.skip_ui:
                ui_chat(
                    next(t for t in targets if t.label == "gateway"),
                    gate,
                    args.rounds,
                    args.seconds,
                )
    if not args.skip_ttft:
        realistic = ["--ttft-ms", "50", "--itl-ms", "10", "--tokens", "64"]
        with stack(tmp, realistic, others, with_nginx) as targets:
            ttft_table(targets, gate, args.rounds, args.seconds)
    if not args.skip_streams:
        many_streams(tmp, args.streams, args.streams_seconds)
    if not args.skip_workers:
        workers_comparison(tmp, gate, args.rounds, args.seconds, args.gateway_cpus, args.load_cpus)
    print("\n" + gate.summary())
    return 0


if __name__ == "__main__":
    sys.exit(main())
