"""The orchestrator's consumer loop: pulls JobRequests from JetStream, runs each in its own
scratch directory with a heartbeat so a live job is not redelivered, records the final
state, queues the webhook, and acks only when the job is finished. On SIGTERM it drains:
it stops pulling, lets the running job finish within `drain_grace_s`, and past that hands
the job back (nak) as a drained hand-back, which is not counted as a failed attempt. Run
it with `python -m orchestrator.main`."""
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
from collections.abc import Coroutine
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nats
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy
from nats.js.kv import KeyValue

from orchestrator.batches import abandon
from orchestrator.billing import BillingUnavailable, NatsBilling
from orchestrator.dubbing.speech_cache import SpeechCache
from orchestrator.fetch import HttpFetcher, StorageShortcutFetcher
from orchestrator.jobobject import job_body
from orchestrator.pipeline import JobCanceled, JobResources, JobResult, run_job
from orchestrator.settings import OrchestratorSettings, load_settings
from orchestrator.stages import TritonStages
from orchestrator.status import JobReporter, now_ms, read_status
from orchestrator.triton_pool import PoolSettings, TritonPool
from orchestrator.upkeep import claim_scratch_root, free_disk_bytes, sweep_periodically
from postprocess.storage import StorageUnavailable, open_storage
from postprocess.webhooks import HttpWebhookSender, RetrySchedule, WebhookDispatcher
from preprocess import probe as probing
from preprocess.errors import MediaError
from proto import lipsync_pb2, topology
from proto.sealed import SealBroken, unseal
from proto.secretkey import SecretKeyMissing
from proto.stages import StageRequestError, StageUnavailable
from proto.urlsign import UrlSigner
from proto.vocabulary import DEFAULT_RESOLUTION, TERMINAL_STATUSES, ErrorCode, JobStatus

log = logging.getLogger("orchestrator")
_LIBC_NAME = ctypes.util.find_library("c")  # looked up once: it runs ldconfig
_LIBC = ctypes.CDLL(_LIBC_NAME) if _LIBC_NAME else None

RETRY_DELAY_S = 5.0
STAGE_CONFIG_ATTEMPTS = 30
STAGE_CONFIG_RETRY_S = 2.0
DEADLINE_CHECK_S = 1.0
HAND_BACK_WAIT_S = 10.0  # for a canceled job to record its hand-back
NATS_CLOSE_TIMEOUT_S = 2.0


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
        self.scratch_root = settings.scratch_root  # serve() gives each process its own
        self.jobs_done = 0
        # Set when the drain grace ran out: the running jobs are canceled and handed back.
        self._handing_back = False
        self._running: set[asyncio.Task[object]] = set()

    async def handle(self, msg: Msg) -> None:
        request = lipsync_pb2.JobRequest()
        request.ParseFromString(msg.data)
        # A job that reached a final state before a crash is only re-announced, not redone.
        previous = await read_status(self.bus.status_kv, request.job_id)
        # JetStream counts every delivery; the hand-backs of draining workers are not attempts.
        drained = previous.drained_handbacks if previous is not None else 0
        attempt = max(1, (msg.metadata.num_delivered or 1) - drained)
        log.info("job %s (%s) attempt %d", request.job_id, request.model, attempt)
        if previous is not None and previous.status in TERMINAL_STATUSES:
            await self._announce(request, previous)
            await msg.ack()
            return

        reporter = JobReporter(self.bus.js, self.bus.status_kv, self.bus.control_kv,
                               request.job_id, attempt, request.seed,
                               signing_key=self.settings.secret_key_bytes)
        reporter.status.drained_handbacks = drained
        if await reporter.is_canceled():
            await self._finish(request, reporter, JobStatus.CANCELED)
            await msg.ack()
            return

        if attempt > self.settings.max_deliver:
            # Every earlier attempt died without an answer (e.g. the process was killed).
            reporter.status.error = "The job could not be processed after several attempts"
            reporter.status.error_code = ErrorCode.INTERNAL_ERROR
            await self._finish(request, reporter, JobStatus.FAILED)
            await msg.ack()
            return

        heartbeat = asyncio.create_task(self._heartbeat(msg, reporter))
        self.scratch_root.mkdir(parents=True, exist_ok=True)
        scratch = Path(tempfile.mkdtemp(prefix=f"{request.job_id}-", dir=self.scratch_root))
        started = time.perf_counter()
        job = asyncio.create_task(self._within_deadline(run_job(request, reporter, self.res, scratch), reporter))
        self._running.add(job)
        try:
            result = await job
        except asyncio.CancelledError:
            if not (self._handing_back and job.cancelled()):
                raise
            log.info("job %s handed back unfinished: drain grace over", request.job_id)
            heartbeat.cancel()
            await self._hand_back(msg, reporter.status)
            return
        except MediaError as exc:
            if exc.code == ErrorCode.CANCELED:  # the gateway refused to bill a canceled job
                log.info("job %s canceled (seen at billing)", request.job_id)
                await reporter.is_canceled()  # reads the moment of the cancel
                await self._finish(request, reporter, JobStatus.CANCELED)
            else:
                log.info("job %s failed: %s (%s)", request.job_id, exc.message, exc.code)
                reporter.status.error, reporter.status.error_code = exc.message, exc.code
                await self._finish(request, reporter, JobStatus.FAILED)
        except JobCanceled:
            log.info("job %s canceled", request.job_id)
            await self._finish(request, reporter, JobStatus.CANCELED)
        except Exception as exc:
            log.exception("job %s attempt %d broke", request.job_id, attempt)
            # A request a stage refuses as invalid fails the same way every time: not retried.
            if attempt < self.settings.max_deliver and not isinstance(exc, StageRequestError):
                heartbeat.cancel()
                await msg.nak(delay=RETRY_DELAY_S * attempt)
                return
            reporter.status.error = "The job could not be processed; please try again later"
            reporter.status.error_code = ErrorCode.INTERNAL_ERROR
            await self._finish(request, reporter, JobStatus.FAILED)
        else:
            reporter.status.output_key = result.output_key
            reporter.status.output_duration_s = result.duration_s
            reporter.status.execution_time_ms = int((time.perf_counter() - started) * 1000)
            reporter.status.timings_ms.update(result.timings_ms)
            if result.quality is not None:
                reporter.status.quality.CopyFrom(result.quality.to_proto())
            try:
                await self._finish(request, reporter, JobStatus.COMPLETED)
            except BillingUnavailable as exc:
                # Nothing was announced and the output is kept under the job's key: the
                # redelivered attempt asks again (or the reaper fails the job).
                log.warning("job %s: final state not recorded (%s); retrying", request.job_id, exc)
                heartbeat.cancel()
                await msg.nak(delay=RETRY_DELAY_S * attempt)
                return
            log.info("job %s %s in %d ms", request.job_id, reporter.status.status,
                     reporter.status.execution_time_ms)
        finally:
            self._running.discard(job)
            heartbeat.cancel()
            shutil.rmtree(scratch, ignore_errors=True)
            release_heap()
        await msg.ack()
        self.jobs_done += 1

    async def _hand_back(self, msg: Msg, status: lipsync_pb2.JobStatus | None) -> None:
        """Give a job back to JetStream for another worker, recorded as a drained hand-back
        (before the nak, so the next delivery already sees it) so it costs no attempt."""
        if status is None:
            request = lipsync_pb2.JobRequest.FromString(msg.data)
            status = await read_status(self.bus.status_kv, request.job_id) or lipsync_pb2.JobStatus(
                job_id=request.job_id, status=JobStatus.PROCESSING, seed=request.seed)
        if status.status in TERMINAL_STATUSES:  # finished meanwhile: nothing to hand back
            await msg.ack()
            return
        status.drained_handbacks += 1
        status.stage = "queued"
        status.updated_at_ms = now_ms()
        await self.bus.status_kv.put(status.job_id, status.SerializeToString())
        await msg.nak()

    async def _finish(self, request: lipsync_pb2.JobRequest, reporter: JobReporter, status: str) -> None:
        """Record the final state: first the gateway's one decision (a cancel or the reaper
        may have won meanwhile), then the status, the settling event and the webhook."""
        resolution = request.resolution or DEFAULT_RESOLUTION
        proposed = lipsync_pb2.JobStatus()
        proposed.CopyFrom(reporter.status)
        proposed.status = status
        # One moment for the final state: the gateway records it and the status repeats it, so
        # GET and the webhook show the same completed_at (a cancel that won keeps its own).
        canceled_at = reporter.canceled_at_ms if status == JobStatus.CANCELED else 0
        proposed.completed_at_ms = proposed.completed_at_ms or canceled_at or now_ms()
        try:
            recorded = await self.res.billing.finalize(proposed, resolution)
        except BillingUnavailable:
            if status == JobStatus.COMPLETED:
                raise  # never announce an output the gateway has not charged for
            log.warning("job %s: gateway unreachable; %s settles from the event", request.job_id, status)
            recorded = status
        if recorded != status:
            log.info("job %s: %s lost to %s; dropping the result", request.job_id, status, recorded)
            self._drop_result(reporter.status)
            if recorded == JobStatus.CANCELED:
                reporter.status.error_code = ErrorCode.CANCELED
                await reporter.is_canceled()  # reads the moment of the cancel, for completed_at
            else:
                reporter.status.error_code = ErrorCode.INTERNAL_ERROR
            if recorded == JobStatus.FAILED:
                reporter.status.error = "The job could not be processed; please try again later"
            status = recorded
        await reporter.finish(status, resolution,
                              completed_at_ms=proposed.completed_at_ms if recorded == proposed.status else 0)
        await self._announce(request, reporter.status, publish_event=False)

    def _drop_result(self, status: lipsync_pb2.JobStatus) -> None:
        if status.output_key:
            self.res.storage.delete(status.output_key)
        status.output_key = ""
        status.output_duration_s = 0.0
        status.execution_time_ms = 0
        status.timings_ms.clear()

    async def _announce(self, request: lipsync_pb2.JobRequest, status: lipsync_pb2.JobStatus,
                        publish_event: bool = True) -> None:
        """Publish the settling event and queue the webhook; both are deduplicated by id."""
        if publish_event:
            data = lipsync_pb2.JobEvent(status=status,
                                        resolution=request.resolution or DEFAULT_RESOLUTION).SerializeToString()
            await self.bus.js.publish(topology.event_subject(request.job_id), data,
                                      headers=topology.event_headers(self.settings.secret_key_bytes,
                                                                     request.job_id, status.status, data))
        if request.webhook_url:
            signer = UrlSigner(self.settings.secret_key_bytes, self.settings.base_url)
            body = job_body(request, status, signer, self.settings.output_url_ttl_s, self.settings.file_retention_s)
            secret = request.webhook_secret
            if request.webhook_secret_sealed:
                try:
                    secret = unseal(self.settings.secret_key_bytes, request.webhook_secret_sealed, request.job_id)
                except SealBroken:
                    # A gateway with another secret key: no delivery can be signed.
                    log.error("job %s: its webhook secret does not open with this secret key; "
                              "no webhook is sent", request.job_id)
                    return
            await self.webhooks.enqueue(self.bus.js, request.job_id, request.webhook_url, secret, body)

    async def _within_deadline(self, work: Coroutine[Any, Any, JobResult], reporter: JobReporter) -> JobResult:
        """Run the job until it finishes or its deadline passes: base + per-second x the
        output's length, which is known once the job is priced (base alone before)."""
        started = time.monotonic()
        job = asyncio.ensure_future(work)
        try:
            while True:
                limit_s = (self.settings.job_deadline_base_s
                           + self.settings.job_deadline_per_output_s * reporter.expected_duration_s)
                remaining_s = started + limit_s - time.monotonic()
                if remaining_s <= 0:
                    raise MediaError(ErrorCode.DEADLINE_EXCEEDED,
                                     f"The job did not finish within its time limit of {limit_s:.0f} s")
                done, _ = await asyncio.wait({job}, timeout=min(remaining_s, DEADLINE_CHECK_S))
                if done:
                    return job.result()
        finally:
            if not job.done():  # past the deadline, or this handler itself was cancelled
                await abandon([job])

    async def _heartbeat(self, msg: Msg, reporter: JobReporter) -> None:
        """Tell JetStream the job is alive (no redelivery) and the gateway's reaper too (the
        status record's updated_at_ms)."""
        while True:
            await asyncio.sleep(self.settings.heartbeat_s)
            try:
                await msg.in_progress()
                await reporter.touch()
            except Exception:  # the next beat tries again; a lost job is redelivered anyway
                log.warning("heartbeat for a running job failed", exc_info=True)

    async def consume(self, stop: asyncio.Event) -> None:
        config = ConsumerConfig(
            durable_name=topology.ORCHESTRATOR_CONSUMER,
            ack_policy=AckPolicy.EXPLICIT,
            deliver_policy=DeliverPolicy.ALL,
            ack_wait=self.settings.ack_wait_s,
            # Unlimited: drained hand-backs are deliveries too; handle() counts the attempts
            # and fails a job after max_deliver of them.
            max_deliver=-1,
            max_ack_pending=max(16, self.settings.concurrency * 4),
        )
        sub = await self.bus.js.pull_subscribe(f"{topology.JOBS_SUBJECT_PREFIX}.>",
                                               durable=topology.ORCHESTRATOR_CONSUMER,
                                               stream=topology.JOBS_STREAM, config=config)
        while not stop.is_set():
            if not await self._disk_has_room(stop):
                continue
            try:
                msgs = await sub.fetch(self.settings.concurrency, timeout=2.0)
            except (nats.errors.TimeoutError, asyncio.TimeoutError):  # nats-py raises both kinds
                continue
            except Exception:
                log.warning("fetching jobs failed; retrying", exc_info=True)
                await asyncio.sleep(1.0)
                continue
            if stop.is_set():  # pulled while the drain began: back at once, unstarted
                await asyncio.gather(*(self._hand_back(m, None) for m in msgs), return_exceptions=True)
                break
            handles = [asyncio.create_task(self.handle(m)) for m in msgs]
            await self._run_batch(handles, stop)
            for msg, task in zip(msgs, handles, strict=True):
                outcome = task.exception() if task.done() and not task.cancelled() else None
                if outcome is not None:
                    # e.g. NATS went away while recording the result: the unacked job is
                    # redelivered, and this loop must keep consuming.
                    log.error("job message %s not settled; JetStream will redeliver it",
                              msg.subject, exc_info=outcome)

    async def _run_batch(self, handles: list[asyncio.Task[None]], stop: asyncio.Event) -> None:
        """Wait for the batch; once stop is set, for at most the drain grace, then cancel
        the running jobs so that they are handed back."""
        stopping = asyncio.create_task(stop.wait())
        try:
            await asyncio.wait([*handles, stopping], return_when=asyncio.FIRST_COMPLETED)
            while not stop.is_set() and not all(t.done() for t in handles):
                await asyncio.wait([*handles, stopping], return_when=asyncio.FIRST_COMPLETED)
        finally:
            stopping.cancel()
        pending = [t for t in handles if not t.done()]
        if not pending:
            return
        log.info("draining: %d running job(s), up to %.0f s to finish", len(pending), self.settings.drain_grace_s)
        _, pending_set = await asyncio.wait(pending, timeout=self.settings.drain_grace_s)
        if not pending_set:
            return
        self._handing_back = True
        for job in list(self._running):
            job.cancel()
        await asyncio.wait(pending_set, timeout=HAND_BACK_WAIT_S)


    async def _disk_has_room(self, stop: asyncio.Event) -> bool:
        """Jobs wait in the queue (untouched, no attempt spent) while the disk is nearly full."""
        self.scratch_root.mkdir(parents=True, exist_ok=True)
        free = free_disk_bytes(self.scratch_root)
        if free >= self.settings.min_free_disk_bytes:
            return True
        log.warning("only %d bytes free under %s (minimum %d); not taking jobs for %.0f s",
                    free, self.scratch_root, self.settings.min_free_disk_bytes, self.settings.disk_wait_s)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), self.settings.disk_wait_s)
        return False


def release_heap() -> None:
    """Hand the heap a finished job freed back to the system (glibc keeps it otherwise), so
    an idle orchestrator does not hold its largest job's memory."""
    if _LIBC is not None:
        _LIBC.malloc_trim(0)



async def _stage_instances(stages: TritonPool) -> dict[str, int]:
    """Instances per stage model from Triton's model configuration (retried while Triton
    comes up; one each if it never answers, which only costs speed)."""
    for attempt in range(STAGE_CONFIG_ATTEMPTS):
        try:
            counts = await stages.load_instance_counts()
        except (StageUnavailable, StageRequestError) as exc:
            log.warning("stage model configuration not readable yet (attempt %d): %s", attempt + 1, exc)
            await asyncio.sleep(STAGE_CONFIG_RETRY_S)
        else:
            log.info("stage instances: %s", counts)
            return counts
    log.error("stage model configuration unreadable; assuming one instance per stage")
    return {}


async def serve(settings: OrchestratorSettings, stop: asyncio.Event) -> None:
    nc = await nats.connect(settings.nats_url, max_reconnect_attempts=-1, reconnect_time_wait=1,
                            name="lipsyncd-orchestrator", user=settings.nats_user or None,
                            password=settings.nats_password or None)
    js = nc.jetstream()
    await topology.ensure_topology(js, settings.stream_replicas)
    bus = Bus(js=js, status_kv=await js.key_value(topology.STATUS_BUCKET),
              control_kv=await js.key_value(topology.CONTROL_BUCKET))
    storage = open_storage(settings.storage_url, settings.storage_root, settings.s3_config())
    shared = settings.triton_shared_memory_on
    stages = TritonPool(settings.triton_url_list,
                        PoolSettings(probe_interval_s=settings.triton_probe_interval_s,
                                     all_down_wait_s=settings.triton_all_down_wait_s),
                        client_factory=lambda url: TritonStages(url, shared_memory=shared))
    instances = await _stage_instances(stages)
    # Media uploaded to our own gateway is read from storage, not fetched over HTTP.
    fetcher = StorageShortcutFetcher(storage, settings.base_url,
                                     HttpFetcher(allow_private=settings.allow_private_urls),
                                     signing_key=settings.secret_key_bytes)
    resources = JobResources(settings=settings, stages=stages, fetcher=fetcher, storage=storage,
                             billing=NatsBilling(nc), stage_instances=instances,
                             speech_cache=SpeechCache(settings.dub_speech_cache_entries, settings.dub_speech_cache_ttl_s))
    webhooks = WebhookDispatcher(
        sender=HttpWebhookSender(allow_private=settings.allow_private_urls, timeout_s=settings.webhook_timeout_s),
        schedule=RetrySchedule(delays_s=tuple(settings.webhook_delays_s)),
        sealing_key=settings.secret_key_bytes,
    )
    orchestrator = Orchestrator(settings, bus, resources, webhooks)
    orchestrator.scratch_root = claim_scratch_root(settings.scratch_root)
    await probing.start_probe_worker()
    resources.spare_decoder.refill(settings.decoder_max_memory_bytes)  # the first dub's decoder, warm
    tasks = [asyncio.create_task(orchestrator.consume(stop)), asyncio.create_task(webhooks.run(js, stop)),
             asyncio.create_task(sweep_periodically(storage, settings.file_retention_s,
                                                    settings.file_sweep_interval_s, stop))]
    log.info("orchestrator consuming %s (triton %s)", topology.JOBS_STREAM, ", ".join(stages.urls))
    await stop.wait()
    # The consumer drains: stops pulling, lets the running job finish or hands it back.
    with contextlib.suppress(asyncio.CancelledError):
        await tasks[0]
    log.info("orchestrator stopping: %d job(s) done here; triton calls %s", orchestrator.jobs_done, stages.stats())
    for task in tasks[1:]:
        task.cancel()
    for task in tasks[1:]:
        with contextlib.suppress(asyncio.CancelledError):
            await task
    await stages.close()
    await probing.close_probe_worker()
    resources.spare_decoder.close()
    shutil.rmtree(orchestrator.scratch_root, ignore_errors=True)
    # Every publish was awaited already; draining the connection would wait on the pull
    # subscription (and hang while NATS is away), so it is closed, with a bound.
    try:
        await asyncio.wait_for(nc.close(), NATS_CLOSE_TIMEOUT_S)
    except (TimeoutError, nats.errors.Error) as exc:
        log.warning("NATS connection not closed cleanly: %r", exc)


def _refuse_broken_configuration(settings: OrchestratorSettings) -> None:
    """Exit with the reason, before taking any job, if URLs could not be signed with the
    shared key or the storage (e.g. an S3 bucket) cannot be used."""
    try:
        settings.secret_key_bytes  # noqa: B018 - loads (or refuses) the shared key
        open_storage(settings.storage_url, settings.storage_root, settings.s3_config()).check()
    except (SecretKeyMissing, StorageUnavailable) as exc:
        raise SystemExit(f"lipsyncd orchestrator: {exc}") from None


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    settings = load_settings()
    _refuse_broken_configuration(settings)
    loop = asyncio.new_event_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    loop.run_until_complete(serve(settings, stop))


if __name__ == "__main__":
    main()
