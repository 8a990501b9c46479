"""The model server as a Docker container, through the Docker Engine API (aiodocker).

One managed container, found by name and labels: a switch stops and removes it and creates a new
one with the profile's arguments, GPU device requests, the Hugging Face cache volume and labels.
In compose the gateway reaches the API through a restricted socket proxy (DOCKER_HOST=tcp://...).
"""

from __future__ import annotations

import contextlib
import os
from typing import Any

import aiodocker
import structlog

from app.core.config import Settings
from app.model_manager.profiles import RuntimeKind
from app.model_manager.runtimes.base import LaunchFailed, LaunchSpec, vllm_args

log = structlog.get_logger()

LABEL_MANAGED = "vllm-chat.managed"
LABEL_PROFILE = "vllm-chat.profile"
COMPOSE_PREFIX = "com.docker.compose."
# the labels Compose finds a service's containers by (`ps`, `logs`, `down`, `up`)
COMPOSE_PROJECT = COMPOSE_PREFIX + "project"
COMPOSE_SERVICE = COMPOSE_PREFIX + "service"
# compose lists (ps, logs, down) only containers that carry a config hash
COMPOSE_CONFIG_HASH = COMPOSE_PREFIX + "config-hash"


def _short(exc: aiodocker.DockerError) -> str:
    message = exc.message if isinstance(exc.message, str) else str(exc.message)
    return f"{exc.status}: {message}"


class DockerRuntime:
    kind = RuntimeKind.DOCKER

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.name = settings.vllm_container_name
        self._docker: aiodocker.Docker | None = None
        self._exit: str | None = None
        self.container_id: str | None = None
        # the compose labels of the last container of ours seen (adopted or removed): a switch
        # stops the old container before it starts the new one
        self._compose_seen: dict[str, str] = {}

    @property
    def docker(self) -> aiodocker.Docker:
        if self._docker is None:
            self._docker = aiodocker.Docker(url=self.settings.docker_host or None)
        return self._docker

    def compose_labels(self, previous: dict[str, str] | None = None) -> dict[str, str]:
        """The compose labels that make our container the compose project's vLLM service.

        Why labels and not "remove it at shutdown": `compose down` then stops and removes the
        container even when the gateway is already gone (killed, or stopped first), the next
        `compose up` finds it as the service's container instead of colliding on its name, and
        `compose ps/logs vllm` show it. The previous container's compose labels (first the
        one compose created) are carried over, its config hash included, so a later
        `compose up` does not take the switched model for a changed service and recreate it.
        """
        service = self.settings.compose_service
        for known in (previous or {}, self._compose_seen):
            if known.get(COMPOSE_PROJECT) and known.get(COMPOSE_SERVICE) == service:
                # compose made the first one: its labels are the truth (`-p NAME` included)
                return {k: v for k, v in known.items() if k.startswith(COMPOSE_PREFIX)}
        project = self.settings.compose_project_name
        if not project:
            return {}
        # no compose-made container seen: a hash compose will not recognise, so `compose up`
        # recreates the service (the default profile) while ps/logs/down still see this one
        return {
            COMPOSE_PROJECT: project,
            COMPOSE_SERVICE: service,
            COMPOSE_PREFIX + "container-number": "1",
            COMPOSE_PREFIX + "oneoff": "False",
            COMPOSE_CONFIG_HASH: "set-by-vllm-chat-gateway",
        }

    def _remember_compose_labels(self, info: dict[str, Any]) -> dict[str, str]:
        labels: dict[str, str] = dict((info.get("Config") or {}).get("Labels") or {})
        if labels.get(COMPOSE_PROJECT) and labels.get(LABEL_MANAGED) == "true":
            self._compose_seen = {k: v for k, v in labels.items() if k.startswith(COMPOSE_PREFIX)}
        return labels

    def hf_cache_source(self) -> str:
        """HF_CACHE_DIR as the engine needs it: `~` is the host's home (HOST_HOME in compose)."""
        cache = self.settings.hf_cache_dir
        home = self.settings.host_home
        if home and (cache == "~" or cache.startswith("~/")):
            return home.rstrip("/") + cache[1:]
        return os.path.expanduser(cache)

    def container_config(
        self, spec: LaunchSpec, previous_labels: dict[str, str] | None = None
    ) -> dict[str, Any]:
        network = self.settings.docker_network
        bind_host = spec.host if network == "host" else "0.0.0.0"  # noqa: S104 - inside its network
        profile = spec.profile
        command = (
            spec.fill(profile.command, bind_host=bind_host)
            if profile.command
            else vllm_args(spec, bind_host=bind_host)
        )
        env = [f"{k}={v}" for k, v in profile.env.items()]
        if spec.hf_token:
            env += [f"HUGGING_FACE_HUB_TOKEN={spec.hf_token}", f"HF_TOKEN={spec.hf_token}"]
        host_config: dict[str, Any] = {
            "NetworkMode": network,
            "IpcMode": "host" if network == "host" else "shareable",  # NCCL needs shared memory
            "RestartPolicy": {"Name": "no"},  # the manager supervises and restarts with backoff
            # rotated like every compose service's log (LOG_MAX_SIZE, LOG_MAX_FILE)
            "LogConfig": {
                "Type": "json-file",
                "Config": {
                    "max-size": self.settings.log_max_size,
                    "max-file": str(self.settings.log_max_file),
                },
            },
        }
        if network != "host":
            host_config["ShmSize"] = 8 * 1024**3
        binds = list(profile.volumes)
        if self.settings.hf_cache_dir:
            binds.append(f"{self.hf_cache_source()}:/root/.cache/huggingface")
        if binds:
            host_config["Binds"] = binds
        if self.settings.docker_gpus and not profile.cpu_only:
            request: dict[str, Any] = {"Driver": "nvidia", "Capabilities": [["gpu"]]}
            if profile.gpu_ids is not None:
                request["DeviceIDs"] = [str(i) for i in profile.gpu_ids]
            else:
                request["Count"] = profile.tensor_parallel_size
            host_config["DeviceRequests"] = [request]
        config: dict[str, Any] = {
            "Image": profile.image or self.settings.vllm_image,
            "Cmd": command,
            "Env": env,
            "Labels": {
                **self.compose_labels(previous_labels),
                LABEL_MANAGED: "true",
                LABEL_PROFILE: spec.profile_id,
            },
            "HostConfig": host_config,
        }
        if not profile.image:
            # the vllm service's health check, so `compose ps` and ./status show this one's
            # health too (the vLLM image has python3; a profile's own image may not)
            probe_host = bind_host if network == "host" else "127.0.0.1"
            probe = (
                "import urllib.request as u; "
                f"u.urlopen('http://{probe_host}:{spec.port}/health', timeout=3)"
            )
            ready_s = profile.ready_timeout_s or self.settings.model_ready_timeout_s
            config["Healthcheck"] = {
                "Test": ["CMD", "python3", "-c", probe],
                "Interval": 15 * 10**9,
                "Timeout": 5 * 10**9,
                "Retries": 5,
                "StartPeriod": int(ready_s * 10**9),
            }
        return config

    async def _remove_existing(self, timeout_s: float) -> dict[str, str]:
        """Stop and remove the container by our name; its labels (none when there was none)."""
        try:
            container = await self.docker.containers.get(self.name)
        except aiodocker.DockerError as exc:
            if exc.status == 404:
                return {}
            raise LaunchFailed(f"Docker API: {_short(exc)}") from exc
        labels = self._remember_compose_labels(container._container)
        with contextlib.suppress(aiodocker.DockerError):
            await container.stop(t=int(timeout_s), timeout=timeout_s + 10)
        try:
            await container.delete(force=True)
        except aiodocker.DockerError as exc:
            if exc.status != 404:
                raise LaunchFailed(f"cannot remove the old container: {_short(exc)}") from exc
        return labels

    async def start(self, spec: LaunchSpec) -> None:
        self._exit = None
        try:
            previous = await self._remove_existing(self.settings.model_stop_timeout_s)
            container = await self.docker.containers.create(
                config=self.container_config(spec, previous), name=self.name
            )
            await container.start()
        except aiodocker.DockerError as exc:
            raise LaunchFailed(f"Docker API: {_short(exc)}") from exc
        except OSError as exc:  # the engine (or its socket proxy) is not reachable
            raise LaunchFailed(f"Docker engine not reachable: {exc}") from exc
        self.container_id = container.id
        log.info("model container started", container=self.name, profile=spec.profile_id)

    async def _state(self) -> dict[str, Any] | None:
        try:
            container = await self.docker.containers.get(self.name)
        except aiodocker.DockerError as exc:
            if exc.status == 404:
                return None
            raise
        info: dict[str, Any] = container._container
        if self.container_id and info.get("Id") != self.container_id:
            return None  # someone replaced our container
        return info

    async def alive(self) -> bool:
        if self.container_id is None:
            return False
        try:
            info = await self._state()
        except (aiodocker.DockerError, OSError):
            return True  # the engine hiccuped; the container is not known to be gone
        if info is None:
            self._exit = self._exit or "the container was removed"
            return False
        state = info.get("State", {})
        if state.get("Running"):
            return True
        detail = f"container exited with code {state.get('ExitCode')}"
        if state.get("OOMKilled"):
            detail += " (killed: out of memory)"
        if state.get("Error"):
            detail += f": {state['Error']}"
        self._exit = self._exit or detail
        return False

    def exit_detail(self) -> str | None:
        return self._exit

    async def stop(self, timeout_s: float) -> None:
        if self.container_id is None:
            return
        self.container_id = None
        try:
            await self._remove_existing(timeout_s)
        except LaunchFailed as exc:
            log.warning("could not remove the model container", error=str(exc))

    async def _running_managed(self) -> tuple[str, str] | None:
        """(container id, profile id) of our container when it runs with the manager's labels."""
        try:
            container = await self.docker.containers.get(self.name)
        except (aiodocker.DockerError, OSError):
            return None
        info: dict[str, Any] = container._container
        labels = (info.get("Config") or {}).get("Labels") or {}
        profile = labels.get(LABEL_PROFILE)
        running = info.get("State", {}).get("Running")
        if labels.get(LABEL_MANAGED) != "true" or not running or not profile:
            return None
        return str(info.get("Id")), str(profile)

    async def discover(self) -> str | None:
        found = await self._running_managed()
        return found[1] if found else None

    async def adopt(self, spec: LaunchSpec) -> bool:
        found = await self._running_managed()
        if found is None or found[1] != spec.profile_id:
            return False
        with contextlib.suppress(aiodocker.DockerError, OSError):
            self._remember_compose_labels((await self.docker.containers.get(self.name))._container)
        self.container_id = found[0]
        self._exit = None
        log.info(
            "adopted the running model container", container=self.name, profile=spec.profile_id
        )
        return True

    async def log_tail(self, lines: int = 40) -> list[str]:
        try:
            container = await self.docker.containers.get(self.name)
            chunks = await container.log(stdout=True, stderr=True, tail=lines)
        except (aiodocker.DockerError, OSError):
            return []
        return "".join(chunks).splitlines()[-lines:]

    async def close(self, *, stop_server: bool) -> None:
        # a container outlives the gateway: the next gateway adopts it instead of restarting vLLM
        if stop_server:
            await self.stop(self.settings.model_stop_timeout_s)
        if self._docker is not None:
            await self._docker.close()
            self._docker = None
