"""The long-lived parts one gateway process shares between requests and consumers."""
from __future__ import annotations

from dataclasses import dataclass

from gateway.accounts.keycache import KeyCache
from gateway.accounts.logins import LoginPolicy, PasswordChecks
from gateway.api.ratelimit import DatabaseRateLimiter, RateLimiter, RequestLimiter
from gateway.billing.pricing import PriceTable
from gateway.bus import JobBus
from gateway.db import Database
from gateway.files import FileSigner
from gateway.jobviews import FinishedJobs
from gateway.settings import Settings
from postprocess.storage import Storage, open_storage


@dataclass(frozen=True)
class GatewayContext:
    settings: Settings
    db: Database
    bus: JobBus
    signer: FileSigner
    storage: Storage
    prices: PriceTable
    rate_limiter: RateLimiter  # this process only (login throttling)
    request_limiter: RequestLimiter  # API requests per plan: shared by replicas when configured
    key_cache: KeyCache
    finished_jobs: FinishedJobs
    password_checks: PasswordChecks
    login_policy: LoginPolicy

    @classmethod
    def build(cls, settings: Settings) -> GatewayContext:
        db = Database(settings.database_url)
        local_limiter = RateLimiter()
        return cls(
            settings=settings,
            db=db,
            bus=JobBus(settings.nats_url, timeout_s=settings.nats_timeout_s,
                       stream_replicas=settings.stream_replicas,
                       user=settings.nats_user, password=settings.nats_password,
                       signing_key=settings.secret_key_bytes()),
            signer=FileSigner(
                secret_key=settings.secret_key_bytes(),
                public_url=settings.public_url,
                storage_dir=settings.storage_path,
            ),
            storage=open_storage(settings.storage_url, settings.storage_path, settings.s3_config()),
            prices=PriceTable(
                credits_per_second=dict(settings.price_per_second),
                min_billed_duration_s=settings.min_billed_duration_s,
            ),
            rate_limiter=local_limiter,
            request_limiter=DatabaseRateLimiter(db) if settings.shared_rate_limits else local_limiter,
            key_cache=KeyCache(settings.api_key_cache_ttl_s),
            finished_jobs=FinishedJobs(),
            password_checks=PasswordChecks(
                settings.max_concurrent_password_checks, settings.max_waiting_password_checks
            ),
            login_policy=LoginPolicy.from_settings(settings),
        )
