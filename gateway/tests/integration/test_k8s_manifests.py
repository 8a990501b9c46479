"""deploy/k8s (issue 15, item 4): every overlay renders with `kubectl kustomize`, validates against
the Kubernetes schemas (kubernetes-validate), passes a security linter (checkov), and says what
the service needs: 3 gateway replicas with probes on /health/live and /health/ready, resources
on every container, vLLM with its GPUs, node pinning, HF cache and the pinned image running the
default profile's flags, the Ingress with nginx's SSE settings, no `latest` tag, no secret in
production. No cluster runs here: this is what can be checked without one.

Tools: kubectl from Debian's `kubernetes-client` (kustomize v2.0.3 inside, the oldest we support),
unpacked into a cache rather than installed (a machine may already have another kubectl at
/usr/bin/kubectl); a kubectl on PATH, when it is another version (kustomize v5), renders too and
must give the same objects. kubernetes-validate and checkov live in a venv of their own, made
from `gateway/requirements-k8s-tools.lock` (hash-checked) and kept in the cache.
"""

from __future__ import annotations

import base64
import contextlib
import fcntl
import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from app.core.config import GATEWAY_DIR, VLLM_IMAGE, Settings
from app.model_manager.profiles import load_profiles
from app.model_manager.runtimes.base import LaunchSpec, vllm_args
from tests.conftest import (
    SHARED_REDIS,
    assert_error,
    bearer,
    create_pg_database,
    drop_pg_database,
    gateway_env,
    require_postgres,
    wait_live,
    wait_until,
)
from tests.docker_engine import IN_CI
from tests.ports import free_port
from tests.sim_process import start_simulator

REPO = GATEWAY_DIR.parent
K8S = REPO / "deploy" / "k8s"
OVERLAYS = sorted(p.parent.name for p in (K8S / "overlays").glob("*/kustomization.yaml"))
TOOLS_LOCK = GATEWAY_DIR / "requirements-k8s-tools.lock"
CACHE = Path(os.environ.get("VLLM_CHAT_K8S_CACHE", Path.home() / ".cache" / "vllm-chat-k8s"))
# the oldest Kubernetes the manifests are for (policy/v1 PDB, autoscaling/v2 HPA, and the
# restricted Pod Security labels), and the newest kubernetes-validate knows
SCHEMA_VERSIONS = ("1.25.0", "1.37.0")
GENERATED_SUFFIX = re.compile(r"\b(vllm-chat-[a-z]+)-[a-z0-9]{10}\b")


def _unavailable(reason: str) -> None:
    if IN_CI:
        pytest.fail(reason)
    pytest.skip(reason)


@contextlib.contextmanager
def _cache_lock(name: str) -> Iterator[None]:
    CACHE.mkdir(parents=True, exist_ok=True)
    with open(CACHE / f".{name}.lock", "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _run(argv: list[str], **kw: Any) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, timeout=600, check=False, **kw)


# --- tools ------------------------------------------------------------------------------------
def _debian_kubectl() -> Path:
    """kubectl of Debian's kubernetes-client, unpacked once into the cache."""
    root = CACHE / "kubernetes-client"
    kubectl = root / "usr" / "bin" / "kubectl"
    with _cache_lock("kubernetes-client"):
        if kubectl.exists():
            return kubectl
        if not shutil.which("apt-get") or not shutil.which("dpkg-deb"):
            _unavailable("Debian's kubernetes-client needs apt-get and dpkg-deb")
        download = CACHE / "download"
        shutil.rmtree(download, ignore_errors=True)
        download.mkdir(parents=True)
        fetch = ["apt-get", "-q", "download", "kubernetes-client"]
        got = _run(fetch, cwd=download)
        if got.returncode != 0:  # no package lists yet: update them (root, as the apt helpers)
            root_prefix = [] if os.geteuid() == 0 else ["sudo", "-n"]
            _run([*root_prefix, "apt-get", "-q", "-o", "DPkg::Lock::Timeout=600", "update"])
            got = _run(fetch, cwd=download)
        debs = sorted(download.glob("kubernetes-client_*.deb"))
        if got.returncode != 0 or not debs:
            _unavailable(f"apt-get download kubernetes-client failed: {got.stderr[-2000:]}")
        unpacked = _run(["dpkg-deb", "-x", str(debs[0]), str(root)])
        assert unpacked.returncode == 0, unpacked.stderr
        shutil.rmtree(download, ignore_errors=True)
        return kubectl


def _kubectl_version(kubectl: Path | str) -> str:
    out = _run([str(kubectl), "version", "--client", "-o", "json"])
    assert out.returncode == 0, out.stderr
    return str(json.loads(out.stdout)["clientVersion"]["gitVersion"])


@pytest.fixture(scope="module")
def kubectls() -> dict[str, Path]:
    """Every kubectl to render with: Debian's always, the one on PATH when it differs."""
    debian = _debian_kubectl()
    found = {_kubectl_version(debian): debian}
    other = shutil.which("kubectl")
    if other:
        version = _kubectl_version(other)
        found.setdefault(version, Path(other))
    return found


@pytest.fixture(scope="module")
def tools() -> Path:
    """The bin/ of a venv with kubernetes-validate and checkov from their hash-locked file."""
    venv = CACHE / "tools-venv"
    stamp = venv / ".installed-requirements-k8s-tools.lock"
    with _cache_lock("tools-venv"):
        if not (stamp.exists() and stamp.read_bytes() == TOOLS_LOCK.read_bytes()):
            shutil.rmtree(venv, ignore_errors=True)
            made = _run([sys.executable, "-m", "venv", str(venv)])
            assert made.returncode == 0, made.stderr
            pip = [str(venv / "bin" / "python"), "-m", "pip", "--disable-pip-version-check", "-q"]
            installed = _run([*pip, "install", "--require-hashes", "-r", str(TOOLS_LOCK)])
            if installed.returncode != 0:
                shutil.rmtree(venv, ignore_errors=True)
                _unavailable(f"installing {TOOLS_LOCK.name} failed: {installed.stderr[-3000:]}")
            shutil.copyfile(TOOLS_LOCK, stamp)
    return venv / "bin"


# --- rendering --------------------------------------------------------------------------------
def _render(kubectl: Path, overlay: str) -> str:
    out = _run([str(kubectl), "kustomize", str(K8S / "overlays" / overlay)])
    assert out.returncode == 0, f"{kubectl} kustomize {overlay}: {out.stderr}"
    return out.stdout


def _objects(text: str) -> list[dict[str, Any]]:
    # kustomize v2.0.3 ends some outputs with an empty document
    return [d for d in yaml.safe_load_all(text) if d]


def _normalised(objects: list[dict[str, Any]]) -> dict[tuple[str, str], Any]:
    """What two kustomize versions must agree on: generated names without their hash (each
    version hashes differently), Secret data decoded, empty labels/annotations dropped."""
    out: dict[tuple[str, str], Any] = {}
    for obj in json.loads(GENERATED_SUFFIX.sub(r"\1-HASH", json.dumps(objects))):
        meta = obj["metadata"]
        for key in ("labels", "annotations"):
            if meta.get(key) == {}:
                del meta[key]
        if obj["kind"] == "Secret":
            obj["data"] = {
                k: base64.b64decode("".join(v.split())).decode() for k, v in obj["data"].items()
            }
        out[(obj["kind"], meta["name"])] = obj
    return out


@pytest.fixture(scope="module")
def rendered(kubectls: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Any:
    """overlay -> (file of the rendered objects, the objects), rendered by Debian's kubectl."""
    debian = _debian_kubectl()
    folder = tmp_path_factory.mktemp("k8s")
    result: dict[str, tuple[Path, list[dict[str, Any]]]] = {}
    for overlay in OVERLAYS:
        objects = _objects(_render(debian, overlay))
        path = folder / f"{overlay}.yaml"
        path.write_text(yaml.safe_dump_all(objects, sort_keys=False))
        result[overlay] = (path, objects)
    return result


def _find(objects: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    found = [o for o in objects if o["kind"] == kind and o["metadata"]["name"] == name]
    assert len(found) == 1, f"{kind}/{name}: {len(found)} found"
    return found[0]


def _pod_specs(objects: list[dict[str, Any]]) -> Iterator[tuple[str, dict[str, Any]]]:
    for obj in objects:
        if obj["kind"] in {"Deployment", "StatefulSet", "DaemonSet", "Job"}:
            yield obj["metadata"]["name"], obj["spec"]["template"]["spec"]


def _containers(pod: dict[str, Any]) -> list[dict[str, Any]]:
    return [*pod.get("initContainers", []), *pod["containers"]]


def test_overlays_exist() -> None:
    assert {"production", "dev"} <= set(OVERLAYS)


# --- the tools' verdicts ----------------------------------------------------------------------
@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_kubectl_renders_the_same_objects(kubectls: dict[str, Path], overlay: str) -> None:
    versions = {v: _normalised(_objects(_render(k, overlay))) for v, k in kubectls.items()}
    first_version, first = next(iter(versions.items()))
    assert first, f"{overlay} renders nothing"
    for version, objects in versions.items():
        assert objects == first, f"{overlay}: {version} and {first_version} differ"


@pytest.mark.parametrize("version", SCHEMA_VERSIONS)
def test_overlays_validate_against_the_kubernetes_schemas(
    tools: Path, rendered: Any, version: str
) -> None:
    files = [str(path) for path, _ in rendered.values()]
    out = _run([str(tools / "kubernetes-validate"), "--strict", "-k", version, *files])
    assert out.returncode == 0, out.stdout + out.stderr
    checked = len(re.findall(r"\bpassed for resource\b", out.stdout + out.stderr))
    assert checked == sum(len(objects) for _, objects in rendered.values())


def test_the_schema_check_catches_a_broken_manifest(tools: Path, tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    deployment = (
        "apiVersion: apps/v1\nkind: Deployment\nmetadata: {{name: {name}}}\nspec:\n"
        "  replicas: {replicas}\n  selector: {{matchLabels: {{a: b}}}}\n  template:\n"
        "    metadata: {{labels: {{a: b}}}}\n    spec:\n      containers:\n"
        "        - {{name: c, image: 'i:1', livenessProbe: {{{probe}: 1}}}}\n"
    )
    bad.write_text(
        deployment.format(name="wrong-type", replicas="three", probe="periodSeconds")
        + "---\n"
        + deployment.format(name="unknown-field", replicas=1, probe="periodSecs")
    )
    out = _run([str(tools / "kubernetes-validate"), "--strict", str(bad)])
    assert out.returncode != 0
    assert "replicas" in out.stdout + out.stderr and "periodSecs" in out.stdout + out.stderr


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_checkov_finds_nothing(tools: Path, rendered: Any, overlay: str) -> None:
    """Every Kubernetes check of checkov passes or is skipped with a reason in the manifest
    (a `checkov.io/skipN` annotation; README lists them)."""
    path, _ = rendered[overlay]
    out = _run(
        [str(tools / "checkov"), "-f", str(path), "--framework", "kubernetes", "-o", "json"],
        env={**os.environ, "LOG_LEVEL": "WARNING", "CHECKOV_RUN_SCA_PACKAGE_SCAN_V2": "false"},
    )
    report = json.loads(out.stdout)
    reports = report if isinstance(report, list) else [report]
    results = [r for r in reports if r.get("check_type") == "kubernetes"]
    assert results, out.stdout[-2000:] + out.stderr[-2000:]
    failed = [
        f"{c['check_id']} {c['resource']}: {c['check_name']}"
        for r in results
        for c in r["results"]["failed_checks"]
    ]
    assert failed == [], "\n".join(failed)
    assert sum(r["summary"]["passed"] for r in results) > 50
    assert not any(r["summary"]["parsing_errors"] for r in results)
    for r in results:
        for skipped in r["results"]["skipped_checks"]:
            assert len(skipped.get("check_result", {}).get("suppress_comment", "")) > 20, skipped


# --- what the service needs -------------------------------------------------------------------
@pytest.mark.parametrize("overlay", OVERLAYS)
def test_the_gateway_runs_three_replicas_with_probes_pdb_and_hpa(
    rendered: Any, overlay: str
) -> None:
    _, objects = rendered[overlay]
    deployment = _find(objects, "Deployment", "gateway")
    assert deployment["spec"]["replicas"] == 3
    pod = deployment["spec"]["template"]["spec"]
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    (gateway,) = [c for c in pod["containers"] if c["name"] == "gateway"]
    assert gateway["livenessProbe"]["httpGet"]["path"] == "/health/live"
    assert gateway["readinessProbe"]["httpGet"]["path"] == "/health/ready"
    assert gateway["startupProbe"]["httpGet"]["path"] == "/health/live"
    # the graceful window (GRACEFUL_SHUTDOWN_S, 30 s) fits before the kill
    assert pod["terminationGracePeriodSeconds"] > 30
    pdb = _find(objects, "PodDisruptionBudget", "gateway")
    assert pdb["spec"]["selector"]["matchLabels"].items() <= labels.items()
    assert 0 < pdb["spec"]["minAvailable"] < 3
    hpa = _find(objects, "HorizontalPodAutoscaler", "gateway")
    assert hpa["apiVersion"] == "autoscaling/v2"
    assert hpa["spec"]["scaleTargetRef"] == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "name": "gateway",
    }
    assert hpa["spec"]["minReplicas"] == 3 < hpa["spec"]["maxReplicas"]
    service = _find(objects, "Service", "gateway")
    assert service["spec"]["selector"].items() <= labels.items()


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_container_is_bounded_pinned_and_unprivileged(rendered: Any, overlay: str) -> None:
    _, objects = rendered[overlay]
    pods = list(_pod_specs(objects))
    assert len(pods) >= 2
    for name, pod in pods:
        assert pod["automountServiceAccountToken"] is False, name
        assert pod["securityContext"]["runAsNonRoot"] is True, name
        assert pod["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault", name
        for c in _containers(pod):
            where = f"{name}/{c['name']}"
            image = c["image"]
            tag = image.rsplit("/", 1)[-1].partition(":")[2]
            assert tag and tag != "latest", f"{where}: {image} has no fixed tag"
            for kind in ("requests", "limits"):
                assert {"cpu", "memory"} <= set(c["resources"][kind]), f"{where} {kind}"
            sc = c["securityContext"]
            assert sc["allowPrivilegeEscalation"] is False, where
            assert sc["capabilities"]["drop"] == ["ALL"], where
            assert "add" not in sc["capabilities"], where
            assert sc.get("privileged") is not True, where
            if c["name"] != "vllm" or overlay == "dev":
                assert sc["readOnlyRootFilesystem"] is True, where


def test_production_has_no_secret_and_dev_generates_its_own(rendered: Any) -> None:
    _, production = rendered["production"]
    assert [o for o in production if o["kind"] == "Secret"] == []
    gateway = _find(production, "Deployment", "gateway")["spec"]["template"]["spec"]
    refs = [e.get("secretRef", {}).get("name") for e in gateway["containers"][0]["envFrom"]]
    assert "vllm-chat-gateway" in refs  # created by the operator (README)
    _, dev = rendered["dev"]
    secrets = {o["metadata"]["name"]: o for o in dev if o["kind"] == "Secret"}
    dev_gateway = _find(dev, "Deployment", "gateway")["spec"]["template"]["spec"]
    for ref in dev_gateway["containers"][0]["envFrom"]:
        name = ref.get("secretRef", {}).get("name")
        if name:
            assert name in secrets  # the generated name (with its hash) is what the pod uses


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_the_gateway_settings_load_in_production_mode(
    rendered: Any, overlay: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The ConfigMap (and the dev Secret) are settings the real Settings class accepts, with
    MODEL_RUNTIME=external: switching is off in the cluster."""
    _, objects = rendered[overlay]
    env = dict(_find(objects, "ConfigMap", "vllm-chat-gateway")["data"])
    for secret in (o for o in objects if o["kind"] == "Secret"):
        if secret["metadata"]["name"].startswith("vllm-chat-gateway"):
            env.update(_normalised([secret]).popitem()[1]["data"])
    if overlay == "production":  # what the operator's Secret holds (README)
        env |= {"JWT_SECRET": "x" * 64, "DATABASE_URL": "postgresql://u:p@db:5432/chat"}
    for key in list(os.environ):
        if key.isupper() and key in Settings.model_fields.keys() | {k.upper() for k in env}:
            monkeypatch.delenv(key)
    for key, value in env.items():
        assert key.lower() in Settings.model_fields, f"{overlay}: unknown setting {key}"
        monkeypatch.setenv(key, value)
    settings = Settings(_env_file=None)  # type: ignore[call-arg]
    assert settings.is_production
    assert settings.model_runtime.value == "external"
    assert settings.vllm_base_url == "http://vllm:8000/v1"
    assert settings.metrics_allow_networks == ["127.0.0.1/32"]
    if overlay == "dev":
        assert settings.effective_database_url.endswith("@postgres:5432/chat")
        assert settings.redis_url == "redis://redis:6379/0"
        assert _find(objects, "Service", "postgres") and _find(objects, "Service", "redis")


def test_vllm_runs_the_pinned_image_and_the_default_profile_on_gpu_nodes(rendered: Any) -> None:
    _, objects = rendered["production"]
    config = _find(objects, "ConfigMap", "vllm-chat-gateway")["data"]
    profile_id = config["MODEL_DEFAULT_PROFILE"]
    profile = load_profiles(GATEWAY_DIR / "profiles" / "profiles.yaml")[profile_id]
    assert profile.runtime is None  # MODEL_RUNTIME=external applies: the gateway starts nothing
    deployment = _find(objects, "Deployment", "vllm")
    assert deployment["spec"]["strategy"]["type"] == "Recreate"  # GPUs free before the new pod
    pod = deployment["spec"]["template"]["spec"]
    (vllm,) = pod["containers"]
    assert vllm["image"] == VLLM_IMAGE  # one release: config.py, compose, .env.sample, here
    every_address = "0.0.0.0"  # noqa: S104 - the pod's port, behind the Service
    spec = LaunchSpec(profile_id=profile_id, profile=profile, host="vllm", port=8000)
    assert vllm["args"] == vllm_args(spec, bind_host=every_address)
    assert "command" not in vllm  # the image's own entrypoint (vLLM's OpenAI server)
    gpus = profile.tensor_parallel_size
    assert vllm["resources"]["limits"]["nvidia.com/gpu"] == gpus
    assert vllm["resources"]["requests"]["nvidia.com/gpu"] == gpus
    assert pod["nodeSelector"] == {"nvidia.com/gpu.present": "true"}
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in pod[
        "tolerations"
    ]
    mounts = {m["name"]: m["mountPath"] for m in vllm["volumeMounts"]}
    env = {e["name"]: e.get("value") for e in vllm["env"]}
    assert env["HF_HOME"] == mounts["hf-cache"]
    volumes = {v["name"]: v for v in pod["volumes"]}
    claim = volumes["hf-cache"]["persistentVolumeClaim"]["claimName"]
    assert _find(objects, "PersistentVolumeClaim", claim)
    assert volumes["dshm"]["emptyDir"]["medium"] == "Memory" and mounts["dshm"] == "/dev/shm"  # noqa: S108
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert _find(objects, "Service", "vllm")["spec"]["selector"].items() <= labels.items()
    assert vllm["ports"][0]["containerPort"] == 8000


def test_dev_runs_the_simulator_without_gpus(rendered: Any) -> None:
    _, objects = rendered["dev"]
    pod = _find(objects, "Deployment", "vllm")["spec"]["template"]["spec"]
    (sim,) = pod["containers"]
    assert sim["command"] == ["python", "-m", "simulator"]
    assert "nvidia.com/gpu" not in json.dumps(pod)
    assert [o for o in objects if o["kind"] == "PersistentVolumeClaim"] == []


def _nginx_timeout(directive: str) -> int:
    text = (REPO / "nginx" / "proxy-gateway.conf").read_text()
    match = re.search(rf"^{directive}\s+(\d+)s;", text, re.M)
    assert match, directive
    return int(match[1])


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_the_ingress_streams_like_nginx(rendered: Any, overlay: str) -> None:
    _, objects = rendered[overlay]
    ingress = _find(objects, "Ingress", "vllm-chat")
    notes = ingress["metadata"]["annotations"]
    prefix = "nginx.ingress.kubernetes.io/"
    assert notes[prefix + "proxy-buffering"] == "off"
    assert int(notes[prefix + "proxy-read-timeout"]) >= _nginx_timeout("proxy_read_timeout")
    assert int(notes[prefix + "proxy-send-timeout"]) >= _nginx_timeout("proxy_send_timeout")
    assert notes[prefix + "ssl-redirect"] == "true"
    # above the gateway's body limit, so a client sees the gateway's own 413 body
    body = re.fullmatch(r"(\d+)m", notes[prefix + "proxy-body-size"])
    assert body and int(body[1]) * 2**20 > Settings(_env_file=None).max_body_bytes  # type: ignore[call-arg]
    assert ingress["spec"]["ingressClassName"] == "nginx"
    assert ingress["spec"]["tls"]
    (rule,) = ingress["spec"]["rules"]
    (path,) = rule["http"]["paths"]
    assert path["backend"]["service"]["name"] == "gateway"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_network_policies_let_only_the_gateway_reach_the_backends(
    rendered: Any, overlay: str
) -> None:
    _, objects = rendered[overlay]
    policies = {o["metadata"]["name"]: o["spec"] for o in objects if o["kind"] == "NetworkPolicy"}
    assert policies["default-deny-ingress"] == {"podSelector": {}, "policyTypes": ["Ingress"]}
    backends = ["vllm", *(["postgres", "redis"] if overlay == "dev" else [])]
    for name in backends:
        (rule,) = policies[name]["ingress"]
        assert rule["from"] == [
            {"podSelector": {"matchLabels": {"app.kubernetes.io/name": "gateway"}}}
        ]
    sources = policies["gateway"]["ingress"][0]["from"]
    assert all("namespaceSelector" in s for s in sources)


# --- the settings of the manifests, run ----------------------------------------------------------
# readOnlyRootFilesystem, as far as one machine can show it: a private mount namespace where `/`
# is read-only and only /tmp (the pod's emptyDir; the test's files are there too) is writable
READ_ONLY_ROOT = (
    "mount --rbind / / && mount -o remount,bind,ro / && mount --bind /tmp /tmp"
    ' && mount -o remount,bind,rw /tmp && exec "$@"'
)


def _with_read_only_root(argv: list[str]) -> list[str]:
    """argv run with a read-only root filesystem (root and util-linux's unshare needed)."""
    wrapper = ["unshare", "--mount", "--propagation", "private", "sh", "-c", READ_ONLY_ROOT, "sh"]
    if os.geteuid() != 0 or not shutil.which("unshare"):
        _unavailable("a read-only root filesystem needs root and unshare")
    probe = _run([*wrapper, "sh", "-c", "! touch /.rw-probe 2>/dev/null && touch /tmp/.rw-probe"])
    if probe.returncode != 0:
        _unavailable(f"cannot make a read-only root here: {probe.stderr[-500:]}")
    return [*wrapper, *argv]


@pytest.mark.parametrize("overlay", OVERLAYS)
async def test_a_gateway_process_with_the_overlays_settings_serves_and_refuses_switches(
    rendered: Any, overlay: str, tmp_path: Path, redis_prefix: str
) -> None:
    """`python -m app.cli serve` with the overlay's ConfigMap and Secret as its environment (the
    addresses of the cluster's Services replaced by this machine's), on a read-only root
    filesystem with a writable /tmp as in the pod: production mode, the
    probes' paths answer, the admin of the Secret logs in, no demo account, the default profile
    is adopted from a server that is already there (a simulator serving the model's name, in
    place of vLLM), chat goes through, and a switch is 409 `switching_disabled`."""
    require_postgres()
    _, objects = rendered[overlay]
    env = dict(_find(objects, "ConfigMap", "vllm-chat-gateway")["data"])
    for secret in (o for o in objects if o["kind"] == "Secret"):
        if secret["metadata"]["name"].startswith("vllm-chat-gateway"):
            env.update(_normalised([secret]).popitem()[1]["data"])
    if overlay == "production":  # the operator's Secret (README)
        env |= {"JWT_SECRET": "k" * 64, "ADMIN_PASSWORD": "an-admin-password-of-our-own"}
    profile_id = env["MODEL_DEFAULT_PROFILE"]
    served = (
        load_profiles(GATEWAY_DIR / "profiles" / "profiles.yaml")[profile_id].served_name
        if profile_id
        else "simulator-model"
    )
    ui = tmp_path / "ui"
    ui.mkdir()
    (ui / "index.html").write_text("<!doctype html><title>vLLM chat</title>")
    pod = _find(objects, "Deployment", "gateway")["spec"]["template"]["spec"]
    (container,) = [c for c in pod["containers"] if c["name"] == "gateway"]
    port = free_port()
    database_url = await create_pg_database("gw_k8s")
    sim = start_simulator(tmp_path / "sim.log", "--model", served)
    env |= {
        "DATABASE_URL": database_url,
        "REDIS_URL": SHARED_REDIS,
        "RATE_LIMIT_KEY_PREFIX": redis_prefix,
        "VLLM_BASE_URL": f"{sim.url}/v1",
        "UI_DIST_DIR": str(ui),
        "GATEWAY_HOST": "127.0.0.1",
        "GATEWAY_PORT": str(port),
        "MODEL_LOG_DIR": str(tmp_path / "model-logs"),
        "SQLITE_PATH": str(tmp_path / "unused.db"),
    }
    base = f"http://127.0.0.1:{port}"
    log_path = tmp_path / "gateway.log"
    try:
        with log_path.open("wb") as log:
            proc = subprocess.Popen(
                _with_read_only_root([sys.executable, "-m", "app.cli", "serve"]),
                cwd=GATEWAY_DIR,
                env=gateway_env(**env) | {"VLLM_BASE_URL": env["VLLM_BASE_URL"]},
                stdout=log,
                stderr=subprocess.STDOUT,
            )
            try:
                await wait_live(base, proc, log_path)
                # the gateway's own view of the files (its mount namespace): / is read-only
                # (the checkout itself too, unless it lies under /tmp, which stays writable
                # as in the pod: a clean clone in /tmp runs the gateway from there)
                probes = [Path("/")]
                if not GATEWAY_DIR.is_relative_to("/tmp"):  # noqa: S108 - the mount above
                    probes.append(GATEWAY_DIR)
                for where in probes:
                    with pytest.raises(OSError, match="Read-only file system"):
                        Path(f"/proc/{proc.pid}/root{where}/.write-probe").touch()
                async with httpx.AsyncClient(base_url=base, timeout=20) as c:
                    for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
                        r = await c.get(container[probe]["httpGet"]["path"])
                        assert r.status_code == 200, (probe, r.text)
                    assert "vLLM chat" in (await c.get("/")).text  # the UI volume
                    r = await c.post(
                        "/api/auth/login", json={"username": "test", "password": "test"}
                    )
                    assert r.status_code == 401  # production: no demo accounts
                    r = await c.post(
                        "/api/auth/login",
                        json={"username": env["ADMIN_USERNAME"], "password": env["ADMIN_PASSWORD"]},
                    )
                    assert r.status_code == 200, r.text
                    admin = bearer(r.json()["access_token"])

                    async def running() -> bool:
                        s = (await c.get("/api/models/status", headers=admin)).json()
                        return bool(s["status"] == "running")

                    await wait_until(running, timeout=30, interval=0.2)
                    status = (await c.get("/api/models/status", headers=admin)).json()
                    assert status["switching_enabled"] is False
                    assert status["served_model"] == served
                    assert status["current_profile"] == (profile_id or None)
                    r = await c.post(
                        "/v1/chat/completions",
                        json={
                            "model": served,
                            "messages": [{"role": "user", "content": "hi"}],
                            "max_tokens": 4,
                        },
                        headers=admin,
                    )
                    assert r.status_code == 200, r.text
                    assert r.json()["model"] == served
                    r = await c.post(
                        "/api/models/switch", json={"profile_id": "phi3-mini"}, headers=admin
                    )
                    assert_error(r, 409, "switching_disabled")
            finally:
                proc.terminate()
                try:
                    proc.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
    finally:
        sim.stop()
        await drop_pg_database(database_url)
    assert env["ADMIN_PASSWORD"] not in log_path.read_text()
