"""A real Docker engine for tests, with no registry.

`start_docker_engine(dir)` runs Debian's `dockerd` on its own unix socket, data root, exec root
and pidfile (no bridge, no iptables: containers use `--network host` and bind 127.0.0.1 only);
`DockerEngine.stop()` stops it and leaves no process, mount or directory behind.

Images come from Debian packages, never from a registry: `mmdebstrap` builds a root file system
into a tarball cached under `~/.cache/vllm-chat-images/` (rebuilt when missing), which
`docker import` turns into an image. `python_base_image()` is Debian bookworm with python3,
venv, pip, ca-certificates and curl; `busybox_image()` is Debian's static busybox alone.

Fixtures (session scope): `docker_engine` and `python_image`. Without a usable engine they skip
on a laptop and fail when CI=true (a skip there would hide tests that never ran).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

CACHE_DIR = Path(
    os.environ.get("VLLM_CHAT_IMAGE_CACHE", Path.home() / ".cache" / "vllm-chat-images")
)
DEBIAN_SUITE = "bookworm"
DEBIAN_MIRROR = os.environ.get("DEBIAN_MIRROR", "http://deb.debian.org/debian")
PYTHON_PACKAGES = ("python3", "python3-venv", "python3-pip", "ca-certificates", "curl")
START_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 30.0
IN_CI = os.environ.get("CI") == "true"
_SYSTEM_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


class DockerUnavailable(RuntimeError):
    """dockerd cannot be installed or started on this machine."""


# --- Debian packages ------------------------------------------------------------------------


def _root_prefix() -> list[str]:
    return [] if os.geteuid() == 0 else ["sudo", "-n"]


@contextlib.contextmanager
def _file_lock(name: str) -> Iterator[None]:
    """Serialise work between test processes (apt runs, image builds into the cache)."""
    CACHE_DIR.mkdir(parents=True, exist_ok=True)
    with open(CACHE_DIR / f".{name}.lock", "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


_apt_updated = False


def apt_install(*packages: str, timeout: float = 900) -> None:
    """`apt-get install` without questions; `apt-get update` once per process first."""
    global _apt_updated
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive", NEEDRESTART_MODE="a")
    apt = [*_root_prefix(), "apt-get", "-q", "-o", "DPkg::Lock::Timeout=600"]
    with _file_lock("apt"):
        if not _apt_updated:
            subprocess.run([*apt, "update"], env=env, check=True, timeout=timeout)
            _apt_updated = True
        subprocess.run(
            [*apt, "install", "-y", "--no-install-recommends", *packages],
            env=env,
            check=True,
            timeout=timeout,
        )


def ensure_docker_installed() -> None:
    """Debian's docker.io (dockerd, containerd, runc) when `dockerd` is missing."""
    if shutil.which("dockerd") and shutil.which("containerd") and shutil.which("runc"):
        return
    try:
        apt_install("docker.io", "containerd", "runc", "tini")
    except (subprocess.SubprocessError, OSError) as exc:
        raise DockerUnavailable(f"cannot install docker.io: {exc}") from exc
    if not shutil.which("dockerd"):
        raise DockerUnavailable("docker.io installed but dockerd is not on PATH")


def _ensure_tool(tool: str, package: str) -> None:
    if not shutil.which(tool):
        apt_install(package)


# --- the engine -----------------------------------------------------------------------------


def _docker_cli() -> str:
    # The client from the same Debian package as the engine when there is one.
    for candidate in ("/usr/bin/docker", shutil.which("docker")):
        if candidate and Path(candidate).exists():
            return candidate
    raise DockerUnavailable("no docker CLI")


def _mounts_under(prefix: Path) -> list[str]:
    mounts: list[str] = []
    with open("/proc/self/mountinfo") as fh:
        for line in fh:
            point = line.split()[4].replace("\\040", " ")
            if point == str(prefix) or point.startswith(f"{prefix}/"):
                mounts.append(point)
    return mounts


def _pids_mentioning(marker: str) -> list[int]:
    """Processes whose command line names `marker` (this engine's containerd and shims)."""
    pids: list[int] = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        if marker.encode() in cmdline:
            pids.append(int(entry.name))
    return pids


class DockerEngine:
    """A dockerd owned by the test: its own socket, data root, exec root and pidfile."""

    def __init__(self, root: Path) -> None:
        self.root = root
        # Unix socket paths are limited to 108 bytes; keep the exec root (containerd's sockets)
        # and the API socket in a short directory of their own.
        self.run_dir = Path(tempfile.mkdtemp(prefix="dk-", dir="/tmp"))
        self.socket = self.run_dir / "docker.sock"
        self.host = f"unix://{self.socket}"
        self.data_root = root / "data"
        self.exec_root = self.run_dir / "exec"
        self.pidfile = self.run_dir / "docker.pid"
        self.log_path = root / "dockerd.log"
        self.cli = _docker_cli()
        self.env = {
            k: v for k, v in os.environ.items() if not k.startswith(("DOCKER_", "BUILDKIT"))
        }
        self.env.update({"DOCKER_HOST": self.host, "DOCKER_CONFIG": str(root / "cli-config")})
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.data_root.mkdir(parents=True, exist_ok=True)
        (self.root / "cli-config").mkdir(exist_ok=True)
        config = self.root / "daemon.json"
        config.write_text("{}\n")  # ignore /etc/docker/daemon.json
        cmd = [
            *_root_prefix(),
            "dockerd",
            f"--host={self.host}",
            f"--data-root={self.data_root}",
            f"--exec-root={self.exec_root}",
            f"--pidfile={self.pidfile}",
            f"--config-file={config}",
            "--bridge=none",
            "--iptables=false",
            "--ip6tables=false",
            "--ip-masq=false",
            "--userland-proxy=false",
            "--log-level=warn",
        ]
        log = open(self.log_path, "ab")  # noqa: SIM115 - closed in stop()
        self._log = log
        self.proc = subprocess.Popen(
            cmd,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            env=self.env,
        )
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            if self.proc.poll() is not None:
                tail = self.log_tail()
                self.stop()
                raise DockerUnavailable(f"dockerd exited with {self.proc.returncode}:\n{tail}")
            if self.socket.exists():
                probe = self.docker(
                    "version", "--format", "{{.Server.Version}}", check=False, timeout=10
                )
                if probe.returncode == 0:
                    self.version = probe.stdout.strip()
                    return
            if time.monotonic() > deadline:
                tail = self.log_tail()
                self.stop()
                raise DockerUnavailable(f"dockerd not answering after {START_TIMEOUT_S}s:\n{tail}")
            time.sleep(0.1)

    def log_tail(self, chars: int = 4000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except OSError:
            return ""

    def docker(
        self, *args: str, check: bool = True, timeout: float = 300, input: str | None = None
    ) -> subprocess.CompletedProcess[str]:
        """Run the docker CLI against this engine; output captured as text."""
        result = subprocess.run(
            [self.cli, *args],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
            input=input,
        )
        if check and result.returncode != 0:
            raise RuntimeError(
                f"docker {' '.join(args)} failed ({result.returncode}):\n"
                f"{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
            )
        return result

    def image_exists(self, tag: str) -> bool:
        return self.docker("image", "inspect", tag, check=False, timeout=30).returncode == 0

    def remove_all_containers(self) -> None:
        ids = self.docker("ps", "-aq", check=False, timeout=30).stdout.split()
        if ids:
            self.docker("rm", "-f", "-v", *ids, check=False, timeout=120)

    def stop(self) -> None:
        """Stop dockerd (containers first), kill what is left, unmount, delete the run dir."""
        proc = self.proc
        if proc is not None and proc.poll() is None:
            with contextlib.suppress(Exception):
                self.remove_all_containers()
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=10)
        # Our own containerd and shims (started by this dockerd) name our directories.
        for marker in (str(self.run_dir), str(self.data_root)):
            for pid in _pids_mentioning(marker):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + 10
        while any(_pids_mentioning(str(self.run_dir))) and time.monotonic() < deadline:
            time.sleep(0.05)
        for base in (self.run_dir, self.root):
            for point in sorted(_mounts_under(base), key=len, reverse=True):
                subprocess.run(
                    [*_root_prefix(), "umount", "-l", point], capture_output=True, check=False
                )
        if getattr(self, "_log", None) is not None:
            self._log.close()
        shutil.rmtree(self.run_dir, ignore_errors=True)
        # The data root holds root-owned files; delete it with the same rights.
        if self.data_root.exists():
            subprocess.run(
                [*_root_prefix(), "rm", "-rf", "--one-file-system", str(self.data_root)],
                check=False,
            )
        self.proc = None


def start_docker_engine(tmp_dir: Path) -> DockerEngine:
    ensure_docker_installed()
    engine = DockerEngine(Path(tmp_dir))
    engine.start()
    return engine


# --- images without a registry --------------------------------------------------------------


def _cached_rootfs(name: str, packages: tuple[str, ...], variant: str = "minbase") -> Path:
    """A Debian root file system tarball made by mmdebstrap, cached by its inputs."""
    key = hashlib.sha256(
        repr((DEBIAN_SUITE, DEBIAN_MIRROR, variant, sorted(packages), 1)).encode()
    ).hexdigest()[:12]
    tarball = CACHE_DIR / f"{name}-{DEBIAN_SUITE}-{key}.tar"
    with _file_lock(f"rootfs-{name}"):
        if tarball.exists() and tarball.stat().st_size > 0:
            return tarball
        _ensure_tool("mmdebstrap", "mmdebstrap")
        partial = tarball.with_suffix(".partial.tar")
        partial.unlink(missing_ok=True)
        cmd = [
            *_root_prefix(),
            "mmdebstrap",
            "--quiet",
            f"--variant={variant}",
            "--dpkgopt=path-exclude=/usr/share/doc/*",
            "--dpkgopt=path-exclude=/usr/share/man/*",
            "--dpkgopt=path-exclude=/usr/share/locale/*",
            "--dpkgopt=path-include=/usr/share/doc/*/copyright",
            "--aptopt=Acquire::Check-Valid-Until false",
            "--customize-hook=rm -rf $1/var/lib/apt/lists/* $1/var/cache/apt/*.bin",
        ]
        if packages:
            cmd.append(f"--include={','.join(packages)}")
        cmd += [DEBIAN_SUITE, str(partial), DEBIAN_MIRROR]
        subprocess.run(cmd, check=True, timeout=1200)
        partial.rename(tarball)
        return tarball


def import_image(engine: DockerEngine, tarball: Path, tag: str, changes: list[str]) -> str:
    if engine.image_exists(tag):
        return tag
    args = ["import"]
    for change in changes:
        args += ["--change", change]
    engine.docker(*args, str(tarball), tag, timeout=600)
    return tag


def debian_image(
    engine: DockerEngine, name: str, packages: tuple[str, ...], tag: str | None = None
) -> str:
    """Debian bookworm (minbase) with `packages`, from a cached mmdebstrap tarball."""
    tarball = _cached_rootfs(name, packages)
    return import_image(
        engine,
        tarball,
        tag or f"local/debian-{name}:{DEBIAN_SUITE}",
        [
            f"ENV PATH={_SYSTEM_PATH}",
            "ENV LANG=C.UTF-8",
            'CMD ["/bin/bash"]',
        ],
    )


def python_base_image(engine: DockerEngine, tag: str = "local/debian-python:bookworm") -> str:
    """Debian bookworm with python3 (3.11), python3-venv, pip, ca-certificates and curl."""
    tarball = _cached_rootfs("python", PYTHON_PACKAGES)
    return import_image(
        engine,
        tarball,
        tag,
        [
            f"ENV PATH={_SYSTEM_PATH}",
            "ENV LANG=C.UTF-8",
            'CMD ["python3"]',
        ],
    )


def busybox_image(engine: DockerEngine, tag: str = "local/busybox:latest") -> str:
    """Debian's busybox-static alone: /bin/busybox and its applets."""
    _ensure_tool("busybox", "busybox-static")
    busybox = Path("/bin/busybox")
    if not busybox.exists():
        busybox = Path(shutil.which("busybox") or "/bin/busybox")
    static = subprocess.run(["file", "-b", str(busybox)], capture_output=True, text=True)
    if static.returncode == 0 and "dynamically linked" in static.stdout:
        apt_install("busybox-static")
    key = hashlib.sha256(busybox.read_bytes() + b"all-applets").hexdigest()[:12]
    tarball = CACHE_DIR / f"busybox-{key}.tar"
    with _file_lock("rootfs-busybox"):
        if not tarball.exists():
            with tempfile.TemporaryDirectory() as tmp:
                root = Path(tmp) / "rootfs"
                for sub in ("bin", "tmp", "etc", "proc", "sys", "dev"):
                    (root / sub).mkdir(parents=True)
                shutil.copy2(busybox, root / "bin" / "busybox")
                (root / "tmp").chmod(0o1777)
                (root / "etc" / "passwd").write_text("root:x:0:0:root:/:/bin/sh\n")
                (root / "etc" / "group").write_text("root:x:0:\n")
                applets = subprocess.run(
                    [str(busybox), "--list"], capture_output=True, text=True, check=True
                ).stdout.split()
                for applet in applets:
                    if applet != "busybox":
                        (root / "bin" / applet).symlink_to("busybox")
                partial = tarball.with_suffix(".partial.tar")
                subprocess.run(
                    [
                        "tar",
                        "-C",
                        str(root),
                        "--numeric-owner",
                        "--owner=0",
                        "--group=0",
                        "-cf",
                        str(partial),
                        ".",
                    ],
                    check=True,
                )
                partial.rename(tarball)
    return import_image(engine, tarball, tag, ["ENV PATH=/bin", 'CMD ["/bin/sh"]'])


# --- fixtures -------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def docker_engine(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DockerEngine]:
    """A dockerd for the session (stopped, with everything it made, at the end)."""
    try:
        engine = start_docker_engine(tmp_path_factory.mktemp("docker"))
    except (DockerUnavailable, subprocess.SubprocessError, OSError) as exc:
        if IN_CI:
            pytest.fail(f"a Docker engine is required in CI but could not start: {exc}")
        pytest.skip(f"no Docker engine: {exc}")
    try:
        yield engine
    finally:
        engine.stop()


@pytest.fixture(scope="session")
def python_image(docker_engine: DockerEngine) -> str:
    """Tag of the Debian bookworm + python3 image in `docker_engine` (no registry)."""
    return python_base_image(docker_engine)
