"""Webhook delivery end to end: a real receiver on 127.0.0.1, the real HttpWebhookSender,
and the WebhookDispatcher on a real nats-server with JetStream (file storage), including
a dispatcher and server restart while a retry is pending."""
from __future__ import annotations

import asyncio
import json
import shutil
import socket
import subprocess
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import nats
import pytest

from postprocess.signing import new_webhook_secret, verify_webhook
from postprocess.webhooks import (
    HttpWebhookSender,
    RetrySchedule,
    WebhookDispatcher,
    webhook_id_for,
)
from proto import topology

pytestmark = pytest.mark.integration

NATS_SERVER = Path(__file__).resolve().parents[2] / ".venv" / "bin" / "nats-server"


# --- a scripted webhook receiver ---------------------------------------------------------

@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: bytes
    at: float


@dataclass
class Receiver:
    """Answers POSTs with the scripted actions in order (an int status, "hang", or
    "redirect"), then 200; records every request."""

    script: list = field(default_factory=list)
    received: list[Received] = field(default_factory=list)
    url: str = ""

    def handler(self):
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.0"

            def log_message(self, format, *args):
                pass

            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                headers = {k.lower(): v for k, v in self.headers.items()}
                receiver.received.append(Received(self.path, headers, body, time.monotonic()))
                action = receiver.script.pop(0) if receiver.script else 200
                if action == "hang":
                    time.sleep(1.5)
                    action = 200
                if action == "redirect":
                    self.send_response(302)
                    self.send_header("Location", "/elsewhere")
                else:
                    self.send_response(action)
                self.send_header("Content-Length", "0")
                self.end_headers()

        return Handler


@pytest.fixture
def receiver():
    rec = Receiver()
    server = ThreadingHTTPServer(("127.0.0.1", 0), rec.handler())
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    rec.url = f"http://127.0.0.1:{server.server_address[1]}/hook"
    yield rec
    server.shutdown()
    server.server_close()


# --- a real nats-server with JetStream ---------------------------------------------------

def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class NatsServer:
    def __init__(self, store_dir: Path) -> None:
        self.store_dir = store_dir
        self.port = free_port()
        self.process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    def start(self) -> None:
        self.process = subprocess.Popen(
            [str(NATS_SERVER), "-a", "127.0.0.1", "-p", str(self.port), "-js",
             "-sd", str(self.store_dir)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("nats-server did not start")

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            self.process.wait(timeout=10)
            self.process = None


@pytest.fixture
def nats_server(tmp_path):
    if not NATS_SERVER.exists() and shutil.which("nats-server") is None:
        pytest.skip("nats-server binary not available")
    server = NatsServer(tmp_path / "jetstream")
    server.start()
    yield server
    server.stop()


async def connect(server: NatsServer):
    nc = await nats.connect(server.url, max_reconnect_attempts=1)
    js = nc.jetstream()
    await topology.ensure_topology(js)
    return nc, js


async def wait_for(predicate, timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.05)


async def pending_webhooks(js) -> int:
    return (await js.stream_info(topology.WEBHOOKS_STREAM)).state.messages


def job_body(job_id: str) -> bytes:
    return json.dumps({"id": job_id, "model": "lipsync-image", "status": "completed",
                       "output": "https://x/out.mp4", "error": ""}).encode()


FAST = RetrySchedule((0.3, 0.3), jitter=0.0)


async def run_dispatcher(dispatcher: WebhookDispatcher, js):
    stop = asyncio.Event()
    task = asyncio.create_task(dispatcher.run(js, stop))
    return stop, task


# --- tests -------------------------------------------------------------------------------

async def test_webhook_is_retried_after_receiver_error(nats_server, receiver):
    receiver.script = [500]
    secret = new_webhook_secret()
    nc, js = await connect(nats_server)
    dispatcher = WebhookDispatcher(HttpWebhookSender(allow_private=True), FAST)
    stop, task = await run_dispatcher(dispatcher, js)
    try:
        body = job_body("job-500")
        webhook_id = await dispatcher.enqueue(js, "job-500", receiver.url, secret, body)
        await wait_for(lambda: len(receiver.received) == 2)
        await asyncio.sleep(0.5)  # no third attempt after the 200
        assert len(receiver.received) == 2
        assert webhook_id == webhook_id_for("job-500")
        for attempt in receiver.received:
            assert attempt.headers["webhook-id"] == webhook_id
            assert attempt.headers["content-type"] == "application/json"
            assert attempt.body == job_body("job-500")
            verify_webhook(secret, attempt.headers, attempt.body, now=time.time())
        gap_s = receiver.received[1].at - receiver.received[0].at
        assert 0.25 <= gap_s < 3.0
        assert await pending_webhooks(js) == 0
    finally:
        stop.set()
        await task
        await nc.close()


async def test_webhook_is_retried_after_receiver_timeout(nats_server, receiver):
    receiver.script = ["hang"]
    nc, js = await connect(nats_server)
    dispatcher = WebhookDispatcher(HttpWebhookSender(allow_private=True, timeout_s=0.5), FAST)
    stop, task = await run_dispatcher(dispatcher, js)
    try:
        await dispatcher.enqueue(js, "job-slow", receiver.url, new_webhook_secret(), b"{}")
        await wait_for(lambda: len(receiver.received) == 2)
        first, second = receiver.received
        expected_id = webhook_id_for("job-slow")
        assert first.headers["webhook-id"] == second.headers["webhook-id"] == expected_id
        await asyncio.sleep(0.3)
        assert await pending_webhooks(js) == 0
    finally:
        stop.set()
        await task
        await nc.close()


async def test_redirects_are_not_followed_and_delivery_gives_up_after_the_schedule(
    nats_server, receiver
):
    receiver.script = ["redirect", "redirect", "redirect", "redirect"]
    nc, js = await connect(nats_server)
    dispatcher = WebhookDispatcher(HttpWebhookSender(allow_private=True), FAST)
    stop, task = await run_dispatcher(dispatcher, js)
    try:
        await dispatcher.enqueue(js, "job-redirect", receiver.url, new_webhook_secret(), b"{}")
        await wait_for(lambda: len(receiver.received) == 3)
        await asyncio.sleep(1.0)
        assert [r.path for r in receiver.received] == ["/hook"] * 3  # max_attempts, no /elsewhere
        assert await pending_webhooks(js) == 0  # terminated, not left waiting
    finally:
        stop.set()
        await task
        await nc.close()


async def test_refused_targets_are_dropped_without_a_request(nats_server, receiver):
    nc, js = await connect(nats_server)
    dispatcher = WebhookDispatcher(HttpWebhookSender(allow_private=False), FAST)
    stop, task = await run_dispatcher(dispatcher, js)
    try:
        await dispatcher.enqueue(js, "job-private", receiver.url, new_webhook_secret(), b"{}")
        await asyncio.sleep(1.5)
        assert receiver.received == []
        assert await pending_webhooks(js) == 0
    finally:
        stop.set()
        await task
        await nc.close()


async def test_enqueueing_the_same_job_twice_delivers_once(nats_server, receiver):
    nc, js = await connect(nats_server)
    dispatcher = WebhookDispatcher(HttpWebhookSender(allow_private=True), FAST)
    secret = new_webhook_secret()
    try:
        await dispatcher.enqueue(js, "job-dup", receiver.url, secret, b"{}")
        await dispatcher.enqueue(js, "job-dup", receiver.url, secret, b"{}")
        assert await pending_webhooks(js) == 1
        stop, task = await run_dispatcher(dispatcher, js)
        await wait_for(lambda: len(receiver.received) == 1)
        await asyncio.sleep(0.8)
        stop.set()
        await task
        assert len(receiver.received) == 1
    finally:
        await nc.close()


async def test_pending_retry_survives_dispatcher_and_server_restart(nats_server, receiver):
    receiver.script = [503]
    secret = new_webhook_secret()
    slow = RetrySchedule((1.5, 1.5), jitter=0.0)
    nc, js = await connect(nats_server)
    dispatcher = WebhookDispatcher(HttpWebhookSender(allow_private=True), slow)
    stop, task = await run_dispatcher(dispatcher, js)
    await dispatcher.enqueue(js, "job-restart", receiver.url, secret, b'{"id":"job-restart"}')
    await wait_for(lambda: len(receiver.received) == 1)
    stop.set()
    await task
    await nc.close()
    assert len(receiver.received) == 1

    nats_server.stop()  # the whole bus goes down while the retry waits
    nats_server.start()
    nc, js = await connect(nats_server)
    assert await pending_webhooks(js) == 1
    dispatcher = WebhookDispatcher(HttpWebhookSender(allow_private=True), slow)
    stop, task = await run_dispatcher(dispatcher, js)
    try:
        await wait_for(lambda: len(receiver.received) == 2, timeout_s=15)
        second = receiver.received[1]
        assert second.headers["webhook-id"] == webhook_id_for("job-restart")
        verify_webhook(secret, second.headers, second.body, now=time.time())
        await asyncio.sleep(0.3)
        assert await pending_webhooks(js) == 0
    finally:
        stop.set()
        await task
        await nc.close()


async def test_pending_webhook_waits_in_the_stream_with_its_secret_sealed(nats_server, receiver):
    receiver.script = [500]
    secret = new_webhook_secret()
    nc, js = await connect(nats_server)
    dispatcher = WebhookDispatcher(HttpWebhookSender(allow_private=True), FAST, sealing_key=b"shared-key")
    stop, task = await run_dispatcher(dispatcher, js)
    try:
        body = job_body("job-sealed")
        await dispatcher.enqueue(js, "job-sealed", receiver.url, secret, body)
        await wait_for(lambda: len(receiver.received) == 1)
        stored = await js.get_last_msg(topology.WEBHOOKS_STREAM, topology.webhook_subject("job-sealed"))
        assert b"whsec_" not in stored.data and secret.encode() not in stored.data
        await wait_for(lambda: len(receiver.received) == 2)
        for attempt in receiver.received:
            verify_webhook(secret, attempt.headers, attempt.body, now=time.time())
    finally:
        stop.set()
        await task
        await nc.close()
