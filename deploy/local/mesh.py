"""`make serve`: the whole mesh on one machine. Starts nats-server (JetStream), tritonserver
on model_repository/ (CPU, Python backend), the orchestrator and the gateway as child
processes; creates a local admin with a ready API key; stops everything on Ctrl-C/SIGTERM
within STOP_TIMEOUT_S.

Scale-out: LIPSYNCD_GATEWAYS, LIPSYNCD_ORCHESTRATORS and LIPSYNCD_TRITONS (default 1 each)
start that many of each. With several gateways a round-robin proxy (deploy/local/proxy.py)
holds the public PORT and the gateways listen on free ports of 127.0.0.1; each orchestrator
spreads its stage calls over every Triton (orchestrator/triton_pool.py). All of them share
LIPSYNCD_HOME (storage, secret key) and LIPSYNCD_DATABASE_URL, passed through as given.
Each process's pid file is LIPSYNCD_HOME/run/<kind>-<n>.pid (gateway-1.pid, triton-2.pid;
nats.pid and proxy.pid for the single ones).

Ports come from PORT (gateway), LIPSYNCD_NATS_PORT, LIPSYNCD_TRITON_GRPC_PORT,
LIPSYNCD_TRITON_HTTP_PORT and LIPSYNCD_TRITON_METRICS_PORT (the first Triton; more take
free ports); state lives in LIPSYNCD_HOME. Every port but PORT is bound to 127.0.0.1.

NATS requires a user: `gateway` and `orchestrator`, each with the subject permissions of
proto/topology.py, in a config file written to LIPSYNCD_HOME/nats.conf (mode 0600). Their
passwords are LIPSYNCD_NATS_GATEWAY_PASSWORD and LIPSYNCD_NATS_ORCHESTRATOR_PASSWORD, or
generated once into LIPSYNCD_HOME/nats-passwords.json (0600).
"""
from __future__ import annotations

import argparse
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import sysconfig
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:  # run as a script: the repository's packages
    sys.path.insert(0, str(ROOT))

from deploy.docker.triton_entry import PREFIX_OPTION, remove_regions  # noqa: E402
from proto.topology import NATS_PERMISSIONS  # noqa: E402

VENV_BIN = Path(sys.executable).parent
READY_TIMEOUT_S = 300.0
MAX_RESTARTS = 5
RESTART_WINDOW_S = 60.0
# Memory a finished job leaves behind. Triton keeps up to 8 gRPC request/response objects for
# reuse by default, each holding the largest tensors it ever carried (~290 MiB after one 720p
# dub); with no pool each request allocates its own. Threaded processes get one glibc arena
# per thread, and freed memory stays scattered over them: two arenas left ~150 MiB less in
# the orchestrator and ~90 MiB less in tritonserver after the bench's jobs, with no change
# in job time measured.
TRITON_MEMORY_FLAGS = ("--grpc-infer-allocation-pool-size=0",)
MALLOC_ENV = {"MALLOC_ARENA_MAX": "2"}
# Triton's Python backend keeps each stub's tensors in /dev/shm files under a prefix; each
# Triton of a mesh gets its own (TRITON_SHM_PREFIX + supervisor pid + "_" + n + "_"), so the
# files a killed Triton leaves behind are removed with it (they are memory, not disk).
TRITON_SHM_PREFIX = "lipsyncd-stub-"
# Ctrl-C/SIGTERM: every child is gone within 10 s. Orchestrators and gateways are stopped
# first (an orchestrator drains its running job, handing it back past its grace), then
# Triton (killed: it keeps no state, and unloading its models takes seconds) and NATS,
# which the draining orchestrator still needs; whatever is left at STOP_TIMEOUT_S is killed.
STOP_TIMEOUT_S = 9.0
FRONT_STOP_S = 7.0
# The drain grace the mesh gives its orchestrators unless LIPSYNCD_DRAIN_GRACE_S says.
MESH_DRAIN_GRACE_S = 5.0


@dataclass(frozen=True)
class Ports:
    gateway: int
    nats: int
    triton_grpc: int
    triton_http: int
    triton_metrics: int


@dataclass(frozen=True)
class Scale:
    gateways: int
    orchestrators: int
    tritons: int


def read_scale(env: dict[str, str]) -> Scale:
    counts = {}
    for kind in ("gateways", "orchestrators", "tritons"):
        name = f"LIPSYNCD_{kind.upper()}"
        try:
            counts[kind] = int(env.get(name, "1"))
        except ValueError:
            raise SystemExit(f"lipsyncd: {name} must be a whole number, got {env[name]!r}") from None
        if not 1 <= counts[kind] <= 16:
            raise SystemExit(f"lipsyncd: {name} must be between 1 and 16, got {counts[kind]}")
    return Scale(**counts)


def read_ports(env: dict[str, str]) -> Ports:
    return Ports(
        gateway=int(env.get("PORT", "8000")),
        nats=int(env.get("LIPSYNCD_NATS_PORT", "4222")),
        triton_grpc=int(env.get("LIPSYNCD_TRITON_GRPC_PORT", "8011")),
        triton_http=int(env.get("LIPSYNCD_TRITON_HTTP_PORT", "8010")),
        triton_metrics=int(env.get("LIPSYNCD_TRITON_METRICS_PORT", "8012")),
    )


def check_ports_free(ports: Ports) -> None:
    for name, port in vars(ports).items():
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                raise SystemExit(
                    f"lipsyncd: port {port} ({name}) is already in use; set "
                    f"{_port_variable(name)} to a free port"
                ) from None


def _port_variable(name: str) -> str:
    return "PORT" if name == "gateway" else f"LIPSYNCD_{name.upper()}_PORT"


def nats_passwords(home: Path, env: dict[str, str]) -> dict[str, str]:
    """Each NATS user's password: from the environment, else generated once under home."""
    path = home / "nats-passwords.json"
    stored: dict[str, str] = json.loads(path.read_text()) if path.exists() else {}
    passwords = {user: env.get(f"LIPSYNCD_NATS_{user.upper()}_PASSWORD") or stored.get(user)
                 or secrets.token_urlsafe(24) for user in NATS_PERMISSIONS}
    if passwords != stored:
        _write_private(path, json.dumps(passwords))
    return passwords


def write_nats_config(home: Path, passwords: dict[str, str]) -> Path:
    """nats-server's config: the users and their permissions (ports and JetStream are flags)."""
    users = [{"user": user, "password": passwords[user], "permissions": permissions}
             for user, permissions in NATS_PERMISSIONS.items()]
    path = home / "nats.conf"
    _write_private(path, json.dumps({"authorization": {"users": users}}, indent=2))
    return path


def _write_private(path: Path, text: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.fchmod(fd, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(text)


def triton_paths() -> tuple[Path, Path]:
    import pytriton  # noqa: PLC0415 - only to locate the bundled server

    base = Path(pytriton.__file__).parent / "tritonserver"
    backends = base / "backends"
    stub = backends / "python" / "triton_python_backend_stub"
    if not stub.exists():
        version = f"{sys.version_info.major}.{sys.version_info.minor}"
        shutil.copy2(base / "python_backend_stubs" / version / "triton_python_backend_stub", stub)
    return base / "bin" / "tritonserver", backends


class Mesh:
    def __init__(self, home: Path, ports: Ports, env: dict[str, str]) -> None:
        self.home = home
        self.ports = ports
        self.env = env
        self.specs: dict[str, tuple[list[str], dict[str, str]]] = {}
        self.children: dict[str, subprocess.Popen[bytes]] = {}
        self.restarts: dict[str, list[float]] = {}
        self.shm_prefixes: dict[str, str] = {}  # child -> the /dev/shm prefix of its files
        self.logs = home / "logs"
        self.logs.mkdir(parents=True, exist_ok=True)
        self.run_dir = home / "run"
        self.run_dir.mkdir(parents=True, exist_ok=True)

    def start(self, name: str, argv: list[str], env: dict[str, str] | None = None, shm_prefix: str = "") -> None:
        """Start a child (and keep it running); `shm_prefix`: the child's /dev/shm files,
        removed whenever it is gone."""
        self.specs[name] = (argv, env or self.env)
        if shm_prefix:
            self.shm_prefixes[name] = shm_prefix
        self._spawn(name)

    def _spawn(self, name: str) -> None:
        argv, env = self.specs[name]
        out = open(self.logs / f"{name}.log", "ab")  # noqa: SIM115 - owned by the child
        # Each child leads its own process group, so that its own children (Triton's Python
        # backend stubs) can be stopped with it, even after the child itself was killed.
        proc = subprocess.Popen(argv, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)
        out.close()
        self.children[name] = proc
        for pid_name in _pid_names(name):
            (self.run_dir / f"{pid_name}.pid").write_text(str(proc.pid))
        print(f"lipsyncd: started {name} (pid {proc.pid}), log {self.logs / (name + '.log')}", flush=True)

    def check_alive(self) -> None:
        """Restart a child that died (a crash, an OOM kill); give up if it keeps dying."""
        for name, proc in list(self.children.items()):
            if proc.poll() is None:
                continue
            now = time.monotonic()
            recent = [t for t in self.restarts.get(name, []) if now - t < RESTART_WINDOW_S]
            if len(recent) >= MAX_RESTARTS:
                tail = (self.logs / f"{name}.log").read_text(errors="replace").splitlines()[-15:]
                raise SystemExit(f"lipsyncd: {name} keeps exiting (code {proc.returncode}):\n" + "\n".join(tail))
            self.restarts[name] = [*recent, now]
            print(f"lipsyncd: {name} exited with code {proc.returncode}; restarting", flush=True)
            _kill_group(proc.pid, signal.SIGKILL)  # orphaned grandchildren of the dead child
            self._remove_shm(name)
            self._spawn(name)

    def stop(self) -> None:
        """The front (proxy, gateways, orchestrators) first, then the back (Triton, NATS);
        whatever is still running at STOP_TIMEOUT_S is killed with its process group."""
        started = time.monotonic()
        back = ("nats", "triton")
        front = [p for n, p in self.children.items() if not n.startswith(back)]
        rear = [p for n, p in self.children.items() if n.startswith(back)]
        for proc in front:
            _kill_group(proc.pid, signal.SIGTERM)
        _wait_all(front, started + FRONT_STOP_S)
        for name, proc in self.children.items():
            if name.startswith(back):  # Triton holds no state worth a slow unload
                _kill_group(proc.pid, signal.SIGKILL if name.startswith("triton") else signal.SIGTERM)
        _wait_all(front + rear, started + STOP_TIMEOUT_S)
        for proc in front + rear:
            _kill_group(proc.pid, signal.SIGKILL)
            if proc.poll() is None:
                proc.kill()
            proc.wait()
        for name in self.children:
            self._remove_shm(name)
            for pid_name in _pid_names(name):
                (self.run_dir / f"{pid_name}.pid").unlink(missing_ok=True)

    def _remove_shm(self, name: str) -> None:
        """The /dev/shm files of a child that is gone (its process group killed)."""
        if name in self.shm_prefixes:
            remove_regions(self.shm_prefixes[name])

    def wait_for(self, what: str, probe: Callable[[], bool], timeout_s: float = READY_TIMEOUT_S) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            self.check_alive()
            if probe():
                return
            time.sleep(0.5)
        raise SystemExit(f"lipsyncd: {what} did not become ready within {timeout_s:.0f} s")


def _pid_names(name: str) -> list[str]:
    """gateway-2 -> [gateway-2]; the first of a kind also under its bare name (gateway.pid),
    which the tools from before the scale-out read."""
    kind, _, n = name.rpartition("-")
    return [name, kind] if n == "1" else [name]


def _wait_all(procs: list[subprocess.Popen[bytes]], deadline: float) -> None:
    for proc in procs:
        try:
            proc.wait(timeout=max(0.01, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            pass  # killed by the caller


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _kill_group(pgid: int, sig: int) -> None:
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass  # the group is already gone


def _tcp_open(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def _http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:  # noqa: S310 - loopback only
            return response.status == 200
    except (urllib.error.URLError, OSError):
        return False


def share_secret_key(home: Path, env: dict[str, str]) -> None:
    """One signing key for every process this supervisor starts: unless LIPSYNCD_SECRET_KEY
    is given, $LIPSYNCD_HOME/secret_key is made here, once, before any child starts (a
    scale-out child refuses to make its own: proto/secretkey.py)."""
    if env.get("LIPSYNCD_SECRET_KEY"):
        return
    try:
        fd = os.open(home / "secret_key", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return
    with os.fdopen(fd, "w") as handle:
        handle.write(secrets.token_hex(32))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--no-admin", action="store_true", help="do not create the local admin")
    args = parser.parse_args()

    env = dict(os.environ)
    ports = read_ports(env)
    scale = read_scale(env)
    home = Path(env.get("LIPSYNCD_HOME", ".lipsyncd")).resolve()
    os.umask(0o077)  # every child's state under LIPSYNCD_HOME is the owner's only
    home.mkdir(mode=0o700, parents=True, exist_ok=True)
    home.chmod(0o700)
    share_secret_key(home, env)
    check_ports_free(ports)
    public_url = env.get("LIPSYNCD_PUBLIC_URL") or f"http://127.0.0.1:{ports.gateway}"
    site_packages = sysconfig.get_paths()["purelib"]
    # Triton n: (grpc, http, metrics); the first on the configured ports.
    triton_ports = [(ports.triton_grpc, ports.triton_http, ports.triton_metrics)]
    triton_ports += [(_free_port(), _free_port(), _free_port()) for _ in range(scale.tritons - 1)]
    gateway_ports = [ports.gateway] if scale.gateways == 1 else [_free_port() for _ in range(scale.gateways)]
    env.update({
        "LIPSYNCD_HOME": str(home),
        "PORT": str(ports.gateway),
        "LIPSYNCD_PUBLIC_URL": public_url,
        "LIPSYNCD_NATS_URL": f"nats://127.0.0.1:{ports.nats}",
        "LIPSYNCD_TRITON_URL": f"127.0.0.1:{ports.triton_grpc}",
        "LIPSYNCD_TRITON_URLS": ",".join(f"127.0.0.1:{grpc}" for grpc, _, _ in triton_ports),
        "LIPSYNCD_TRITON_HTTP_URL": f"http://127.0.0.1:{ports.triton_http}",
        "PYTHONPATH": str(ROOT),
    })
    env.setdefault("LIPSYNCD_DRAIN_GRACE_S", str(MESH_DRAIN_GRACE_S))
    passwords = nats_passwords(home, env)
    nats_config = write_nats_config(home, passwords)
    gateway_nats = {"LIPSYNCD_NATS_USER": "gateway", "LIPSYNCD_NATS_PASSWORD": passwords["gateway"]}
    orchestrator_nats = {"LIPSYNCD_NATS_USER": "orchestrator", "LIPSYNCD_NATS_PASSWORD": passwords["orchestrator"]}

    mesh = Mesh(home, ports, env)
    stopping = False

    def on_signal(signum: int, _frame: object) -> None:
        nonlocal stopping
        if not stopping:
            stopping = True
            raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_signal)
    try:
        mesh.start("nats", [str(VENV_BIN / "nats-server"), "-c", str(nats_config),
                            "-a", "127.0.0.1", "-p", str(ports.nats),
                            "-js", "-sd", str(home / "nats")])
        tritonserver, backends = triton_paths()
        triton_env = dict(env)
        # The Python backend stub embeds libpython and ignores PYTHONPATH; the stage models
        # read LIPSYNCD_STAGE_PYTHONPATH instead.
        triton_env["LD_LIBRARY_PATH"] = ":".join(filter(None, [sysconfig.get_config_var("LIBDIR"),
                                                               env.get("LD_LIBRARY_PATH")]))
        triton_env["LIPSYNCD_STAGE_PYTHONPATH"] = f"{site_packages}:{ROOT}"
        triton_env.setdefault("OMP_NUM_THREADS", "1")
        triton_env = {**MALLOC_ENV, **triton_env}
        for n, (grpc, http, metrics) in enumerate(triton_ports, start=1):
            shm_prefix = f"{TRITON_SHM_PREFIX}{os.getpid()}_{n}_"
            mesh.start(f"triton-{n}", [
                str(tritonserver), f"--model-repository={ROOT / 'model_repository'}",
                f"--backend-directory={backends}", "--grpc-address=127.0.0.1", f"--grpc-port={grpc}",
                "--http-address=127.0.0.1", f"--http-port={http}",
                "--metrics-address=127.0.0.1", f"--metrics-port={metrics}",
                "--log-verbose=0", "--exit-timeout-secs=5", *TRITON_MEMORY_FLAGS,
                PREFIX_OPTION + shm_prefix], env=triton_env, shm_prefix=shm_prefix)
        mesh.wait_for("nats-server", lambda: _tcp_open(ports.nats))
        for n, (_, http, _) in enumerate(triton_ports, start=1):
            mesh.wait_for(f"tritonserver {n}", partial(_http_ok, f"http://127.0.0.1:{http}/v2/health/ready"))
        for n in range(1, scale.orchestrators + 1):
            mesh.start(f"orchestrator-{n}", [sys.executable, "-m", "orchestrator.main"],
                       env={**MALLOC_ENV, **env, **orchestrator_nats})
        for n, port in enumerate(gateway_ports, start=1):
            gateway_env = {**env, **gateway_nats}
            if scale.gateways > 1:
                gateway_env.update({"PORT": str(port), "LIPSYNCD_HOST": "127.0.0.1"})
            mesh.start(f"gateway-{n}", [sys.executable, "-m", "gateway"], env=gateway_env)
        for port in gateway_ports:
            mesh.wait_for(f"gateway on port {port}", partial(_http_ok, f"http://127.0.0.1:{port}/readyz"))
        if scale.gateways > 1:
            mesh.start("proxy", [sys.executable, str(ROOT / "deploy" / "local" / "proxy.py"),
                                 "--listen", f"0.0.0.0:{ports.gateway}",
                                 *(f"--backend=127.0.0.1:{port}" for port in gateway_ports)])
            mesh.wait_for("proxy", lambda: _http_ok(f"http://127.0.0.1:{ports.gateway}/readyz"))
        if not args.no_admin:
            key = subprocess.run([sys.executable, "-m", "gateway.admin", "ensure-admin"], cwd=ROOT, env=env,  # stderr: where the password is
                                 check=True, stdout=subprocess.PIPE, text=True).stdout.strip()
            admin_email = env.get("LIPSYNCD_ADMIN_EMAIL", "admin@localhost")
            password_file = home / "admin_password"
            where = (f"its password is in {password_file}" if password_file.exists()
                     else "its password was set with `python -m gateway.admin`")
            print(f"\nlipsyncd is ready at {public_url}\nAPI key: {key}\n"
                  f"Dashboard: {public_url}/  (log in as {admin_email}; {where}; or sign up)\n\nTry:\n"
                  f"  curl -s -X POST {public_url}/api/v1/lipsync-image \\\n"
                  f"    -H 'Authorization: Bearer {key}' -H 'Content-Type: application/json' \\\n"
                  "    -d '{\"formState\": {\"image\": \"https://example.com/portrait.png\", "
                  "\"audio\": \"https://example.com/speech.wav\"}}'\n"
                  f"  curl -s {public_url}/api/v1/jobs/<id> -H 'Authorization: Bearer {key}'\n", flush=True)
        print("lipsyncd: mesh ready", flush=True)
        while True:
            mesh.check_alive()
            time.sleep(1.0)
    except KeyboardInterrupt:
        print("lipsyncd: stopping", flush=True)
    finally:
        mesh.stop()


if __name__ == "__main__":
    main()
