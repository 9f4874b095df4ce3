"""The plan table: what each plan grants and which limits it sets. Operators override it
with `LIPSYNCD_PLANS` (JSON object of plan name -> fields)."""
from __future__ import annotations

from pydantic import BaseModel, ConfigDict

from proto.vocabulary import RESOLUTIONS


class Plan(BaseModel):
    model_config = ConfigDict(frozen=True)

    api_credits_grant: int
    app_credits_grant: int
    max_concurrent_jobs: int
    requests_per_minute: int
    max_resolution: str = "720p"

    def allows_resolution(self, resolution: str) -> bool:
        return RESOLUTIONS.index(resolution) <= RESOLUTIONS.index(self.max_resolution)


DEFAULT_PLANS: dict[str, Plan] = {
    "free": Plan(
        api_credits_grant=60,
        app_credits_grant=60,
        max_concurrent_jobs=2,
        requests_per_minute=60,
        max_resolution="480p",
    ),
    "starter": Plan(
        api_credits_grant=1000,
        app_credits_grant=1000,
        max_concurrent_jobs=5,
        requests_per_minute=300,
        max_resolution="720p",
    ),
    "pro": Plan(
        api_credits_grant=10000,
        app_credits_grant=10000,
        max_concurrent_jobs=20,
        requests_per_minute=1200,
        max_resolution="720p",
    ),
}
