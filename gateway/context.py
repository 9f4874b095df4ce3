"""The long-lived parts one gateway process shares between requests and consumers."""
from __future__ import annotations

from dataclasses import dataclass

from gateway.accounts.keycache import KeyCache
from gateway.api.ratelimit import RateLimiter
from gateway.billing.pricing import PriceTable
from gateway.bus import JobBus
from gateway.db import Database
from gateway.files import FileSigner
from gateway.jobviews import FinishedJobs
from gateway.settings import Settings


@dataclass(frozen=True)
class GatewayContext:
    settings: Settings
    db: Database
    bus: JobBus
    signer: FileSigner
    prices: PriceTable
    rate_limiter: RateLimiter
    key_cache: KeyCache
    finished_jobs: FinishedJobs

    @classmethod
    def build(cls, settings: Settings) -> "GatewayContext":
        return cls(
            settings=settings,
            db=Database(settings.database_url),
            bus=JobBus(settings.nats_url, timeout_s=settings.nats_timeout_s,
                       user=settings.nats_user, password=settings.nats_password,
                       signing_key=settings.secret_key_bytes()),
            signer=FileSigner(
                secret_key=settings.secret_key_bytes(),
                public_url=settings.public_url,
                storage_dir=settings.storage_path,
            ),
            prices=PriceTable(
                credits_per_second=dict(settings.price_per_second),
                min_billed_duration_s=settings.min_billed_duration_s,
            ),
            rate_limiter=RateLimiter(),
            key_cache=KeyCache(settings.api_key_cache_ttl_s),
            finished_jobs=FinishedJobs(),
        )
