"""The orchestrator's consumer loop: pulls JobRequests from JetStream, runs each in its own
scratch directory with a heartbeat so a live job is not redelivered, records the final
state, queues the webhook, and acks only when the job is finished. Run it with
`python -m orchestrator.main`."""
from __future__ import annotations

import asyncio
import contextlib
import ctypes
import ctypes.util
import logging
import shutil
import signal
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import nats
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy
from nats.js.kv import KeyValue

from orchestrator.billing import NatsBilling
from orchestrator.fetch import HttpFetcher, StorageShortcutFetcher
from orchestrator.jobobject import job_body
from orchestrator.pipeline import JobCanceled, JobResources, run_job
from orchestrator.settings import OrchestratorSettings, load_settings
from orchestrator.stages import TritonStages
from orchestrator.status import JobReporter, now_ms, read_status
from postprocess.storage import LocalStorage
from postprocess.webhooks import HttpWebhookSender, RetrySchedule, WebhookDispatcher
from preprocess import probe as probing
from preprocess.errors import MediaError
from proto import lipsync_pb2, topology

log = logging.getLogger("orchestrator")
_LIBC_NAME = ctypes.util.find_library("c")  # looked up once: it runs ldconfig
_LIBC = ctypes.CDLL(_LIBC_NAME) if _LIBC_NAME else None

TERMINAL = ("completed", "failed", "canceled")
RETRY_DELAY_S = 5.0


@dataclass
class Bus:
    js: JetStreamContext
    status_kv: KeyValue
    control_kv: KeyValue


class Orchestrator:
    def __init__(self, settings: OrchestratorSettings, bus: Bus, resources: JobResources,
                 webhooks: WebhookDispatcher) -> None:
        self.settings = settings
        self.bus = bus
        self.res = resources
        self.webhooks = webhooks

    async def handle(self, msg: Msg) -> None:
        request = lipsync_pb2.JobRequest()
        request.ParseFromString(msg.data)
        attempt = msg.metadata.num_delivered or 1
        log.info("job %s (%s) attempt %d", request.job_id, request.model, attempt)

        # A job that reached a final state before a crash is only re-announced, not redone.
        previous = await read_status(self.bus.status_kv, request.job_id)
        if previous is not None and previous.status in TERMINAL:
            await self._announce(request, previous)
            await msg.ack()
            return

        reporter = JobReporter(self.bus.js, self.bus.status_kv, self.bus.control_kv,
                               request.job_id, attempt, request.seed)
        if await reporter.is_canceled():
            await self._finish(request, reporter, "canceled")
            await msg.ack()
            return

        if attempt > self.settings.max_deliver:
            # Every earlier attempt died without an answer (e.g. the process was killed).
            reporter.status.error = "The job could not be processed after several attempts"
            reporter.status.error_code = "internal_error"
            await self._finish(request, reporter, "failed")
            await msg.ack()
            return

        heartbeat = asyncio.create_task(self._heartbeat(msg))
        self.settings.scratch_root.mkdir(parents=True, exist_ok=True)
        scratch = Path(tempfile.mkdtemp(prefix=f"{request.job_id}-", dir=self.settings.scratch_root))
        started = time.perf_counter()
        try:
            result = await run_job(request, reporter, self.res, scratch)
        except MediaError as exc:
            log.info("job %s failed: %s (%s)", request.job_id, exc.message, exc.code)
            reporter.status.error, reporter.status.error_code = exc.message, exc.code
            await self._finish(request, reporter, "failed")
        except JobCanceled:
            log.info("job %s canceled", request.job_id)
            await self._finish(request, reporter, "canceled")
        except Exception:
            log.exception("job %s attempt %d broke", request.job_id, attempt)
            if attempt < self.settings.max_deliver:
                heartbeat.cancel()
                await msg.nak(delay=RETRY_DELAY_S * attempt)
                return
            reporter.status.error = "The job could not be processed; please try again later"
            reporter.status.error_code = "internal_error"
            await self._finish(request, reporter, "failed")
        else:
            reporter.status.output_key = result.output_key
            reporter.status.output_duration_s = result.duration_s
            reporter.status.execution_time_ms = int((time.perf_counter() - started) * 1000)
            reporter.status.timings_ms.update(result.timings_ms)
            if result.quality is not None:
                reporter.status.quality.CopyFrom(result.quality.to_proto())
            await self._finish(request, reporter, "completed")
            log.info("job %s completed in %d ms", request.job_id, reporter.status.execution_time_ms)
        finally:
            heartbeat.cancel()
            shutil.rmtree(scratch, ignore_errors=True)
            release_heap()
        await msg.ack()

    async def _finish(self, request: lipsync_pb2.JobRequest, reporter: JobReporter, status: str) -> None:
        await reporter.finish(status, request.resolution or "480p")
        await self._announce(request, reporter.status, publish_event=False)

    async def _announce(self, request: lipsync_pb2.JobRequest, status: lipsync_pb2.JobStatus,
                        publish_event: bool = True) -> None:
        """Publish the settling event and queue the webhook; both are deduplicated by id."""
        if publish_event:
            event = lipsync_pb2.JobEvent(status=status, resolution=request.resolution or "480p")
            await self.bus.js.publish(topology.event_subject(request.job_id), event.SerializeToString(),
                                      headers={"Nats-Msg-Id": f"{request.job_id}:{status.status}"})
        if request.webhook_url:
            body = job_body(request, status, self.settings.base_url, self.settings.secret_key_bytes)
            await self.webhooks.enqueue(self.bus.js, request.job_id, request.webhook_url,
                                        request.webhook_secret, body)

    async def _heartbeat(self, msg: Msg) -> None:
        while True:
            await asyncio.sleep(self.settings.heartbeat_s)
            try:
                await msg.in_progress()
            except Exception:  # the next beat tries again; a lost job is redelivered anyway
                log.warning("heartbeat for a running job failed", exc_info=True)

    async def consume(self, stop: asyncio.Event) -> None:
        config = ConsumerConfig(
            durable_name=topology.ORCHESTRATOR_CONSUMER,
            ack_policy=AckPolicy.EXPLICIT,
            deliver_policy=DeliverPolicy.ALL,
            ack_wait=self.settings.ack_wait_s,
            max_deliver=self.settings.max_deliver + 1,
            max_ack_pending=max(16, self.settings.concurrency * 4),
        )
        sub = await self.bus.js.pull_subscribe(f"{topology.JOBS_SUBJECT_PREFIX}.>",
                                               durable=topology.ORCHESTRATOR_CONSUMER,
                                               stream=topology.JOBS_STREAM, config=config)
        while not stop.is_set():
            try:
                msgs = await sub.fetch(self.settings.concurrency, timeout=2.0)
            except (nats.errors.TimeoutError, asyncio.TimeoutError):  # nats-py raises both kinds
                continue
            except Exception:
                log.warning("fetching jobs failed; retrying", exc_info=True)
                await asyncio.sleep(1.0)
                continue
            outcomes = await asyncio.gather(*(self.handle(m) for m in msgs), return_exceptions=True)
            for msg, outcome in zip(msgs, outcomes):
                if isinstance(outcome, BaseException):
                    # e.g. NATS went away while recording the result: the unacked job is
                    # redelivered, and this loop must keep consuming.
                    log.error("job message %s not settled; JetStream will redeliver it",
                              msg.subject, exc_info=outcome)


def release_heap() -> None:
    """Hand the heap a finished job freed back to the system (glibc keeps it otherwise), so
    an idle orchestrator does not hold its largest job's memory."""
    if _LIBC is not None:
        _LIBC.malloc_trim(0)


async def serve(settings: OrchestratorSettings, stop: asyncio.Event) -> None:
    nc = await nats.connect(settings.nats_url, max_reconnect_attempts=-1, reconnect_time_wait=1,
                            name="lipsyncd-orchestrator")
    js = nc.jetstream()
    await topology.ensure_topology(js)
    bus = Bus(js=js, status_kv=await js.key_value(topology.STATUS_BUCKET),
              control_kv=await js.key_value(topology.CONTROL_BUCKET))
    storage = LocalStorage(settings.storage_root)
    stages = TritonStages(settings.triton_url)
    # Media uploaded to our own gateway is read from storage, not fetched over HTTP.
    fetcher = StorageShortcutFetcher(storage, settings.base_url,
                                     HttpFetcher(allow_private=settings.allow_private_urls),
                                     signing_key=settings.secret_key_bytes)
    resources = JobResources(settings=settings, stages=stages, fetcher=fetcher, storage=storage,
                             billing=NatsBilling(nc))
    webhooks = WebhookDispatcher(
        sender=HttpWebhookSender(allow_private=settings.allow_private_urls, timeout_s=settings.webhook_timeout_s),
        schedule=RetrySchedule(delays_s=tuple(settings.webhook_delays_s)),
    )
    orchestrator = Orchestrator(settings, bus, resources, webhooks)
    await probing.start_probe_worker()
    tasks = [asyncio.create_task(orchestrator.consume(stop)), asyncio.create_task(webhooks.run(js, stop))]
    log.info("orchestrator consuming %s (triton %s)", topology.JOBS_STREAM, settings.triton_url)
    await stop.wait()
    for task in tasks:
        task.cancel()
    for task in tasks:
        with contextlib.suppress(asyncio.CancelledError):
            await task
    await stages.close()
    await probing.close_probe_worker()
    await nc.drain()


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    settings = load_settings()
    loop = asyncio.new_event_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    loop.run_until_complete(serve(settings, stop))


if __name__ == "__main__":
    main()
