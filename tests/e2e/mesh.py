"""The mesh as `make serve` runs it, started once per test session in its own home and on
free ports, with a client helper for the REST API."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from tests.servers import free_port

ROOT = Path(__file__).resolve().parents[2]
READY_TIMEOUT_S = 420.0


@dataclass
class Mesh:
    home: Path
    env: dict[str, str]
    process: subprocess.Popen[str]
    url: str
    api_key: str
    output: list[str] = field(default_factory=list)

    @property
    def nats_url(self) -> str:
        return f"nats://127.0.0.1:{self.env['LIPSYNCD_NATS_PORT']}"

    def nats_auth(self, user: str) -> dict[str, str]:
        """Connect arguments for NATS as one of the mesh's users."""
        passwords = json.loads((self.home / "nats-passwords.json").read_text())
        return {"user": user, "password": passwords[user]}

    def admin(self, *args: str) -> str:
        done = subprocess.run([sys.executable, "-m", "gateway.admin", *args], cwd=ROOT, env=self.env,
                              capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stderr
        return done.stdout.strip()

    def client(self, key: str | None = None) -> httpx.Client:
        headers = {"Authorization": f"Bearer {key or self.api_key}"}
        return httpx.Client(base_url=self.url, headers=headers, timeout=30)

    def wait_job(self, job_id: str, key: str | None = None, timeout_s: float = 300.0) -> dict[str, object]:
        deadline = time.monotonic() + timeout_s
        with self.client(key) as client:
            while time.monotonic() < deadline:
                job = client.get(f"/api/v1/jobs/{job_id}").json()
                if job["status"] in ("completed", "failed", "canceled"):
                    return job
                time.sleep(0.5)
        raise AssertionError(f"job {job_id} did not finish within {timeout_s} s: {job}")

    def stop(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=40)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)


def start_mesh(home: Path, extra_env: dict[str, str] | None = None) -> Mesh:
    port = free_port()
    env = dict(os.environ)
    env.update({
        "PORT": str(port),
        "LIPSYNCD_HOME": str(home),
        "LIPSYNCD_NATS_PORT": str(free_port()),
        "LIPSYNCD_TRITON_GRPC_PORT": str(free_port()),
        "LIPSYNCD_TRITON_HTTP_PORT": str(free_port()),
        "LIPSYNCD_TRITON_METRICS_PORT": str(free_port()),
        "LIPSYNCD_ALLOW_PRIVATE_URLS": "1",
        "LIPSYNCD_WEBHOOK_SCHEDULE_S": "1,2,3",
        "LIPSYNCD_ACK_WAIT_S": "6",
        "LIPSYNCD_HEARTBEAT_S": "1",
        "LIPSYNCD_WEBHOOK_TIMEOUT_S": "3",
        "PYTHONUNBUFFERED": "1",
    })
    env.pop("LIPSYNCD_DATABASE_URL", None)
    env.update(extra_env or {})
    process = subprocess.Popen(["make", "--no-print-directory", "serve"], cwd=ROOT, env=env,
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                               start_new_session=True)
    lines: list[str] = []
    key = ""
    deadline = time.monotonic() + READY_TIMEOUT_S
    assert process.stdout is not None
    while time.monotonic() < deadline:
        line = process.stdout.readline()
        if not line:
            break
        lines.append(line.rstrip())
        if line.startswith("API key: "):
            key = line.split(": ", 1)[1].strip()
        if "lipsyncd: mesh ready" in line:
            break
    else:
        process.kill()
    if not key or process.poll() is not None:
        os.killpg(process.pid, signal.SIGKILL)
        logs = "\n".join(lines[-40:])
        raise RuntimeError(f"make serve did not become ready:\n{logs}")
    mesh = Mesh(home=home, env=env, process=process, url=f"http://127.0.0.1:{port}", api_key=key, output=lines)
    threading.Thread(target=_drain, args=(process, lines), daemon=True).start()
    return mesh


def _drain(process: subprocess.Popen[str], lines: list[str]) -> None:
    assert process.stdout is not None
    for line in process.stdout:
        lines.append(line.rstrip())
