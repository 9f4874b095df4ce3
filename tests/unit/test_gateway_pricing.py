"""Prices: per started second by resolution, with a minimum billed duration."""
from __future__ import annotations

import pytest

from gateway.billing.plans import DEFAULT_PLANS
from gateway.billing.pricing import PriceTable

PRICES = PriceTable(credits_per_second={"480p": 1, "720p": 2}, min_billed_duration_s=5)


@pytest.mark.parametrize(
    ("duration_s", "resolution", "credits"),
    [
        (0.0, "480p", 5),
        (3.2, "480p", 5),
        (5.0, "480p", 5),
        (5.0000001, "480p", 5),
        (5.01, "480p", 6),
        (12.2, "480p", 13),
        (12.2, "720p", 26),
        (600.0, "720p", 1200),
        (-1.0, "480p", 5),
    ],
)
def test_price_bills_started_seconds_with_a_minimum(
    duration_s: float, resolution: str, credits: int
) -> None:
    assert PRICES.price(duration_s, resolution) == credits


def test_720p_costs_more_than_480p() -> None:
    assert PRICES.minimum_charge("720p") > PRICES.minimum_charge("480p")


def test_unknown_resolution_has_no_price() -> None:
    with pytest.raises(KeyError):
        PRICES.price(10, "4k")


def test_free_plan_is_capped_at_480p() -> None:
    free = DEFAULT_PLANS["free"]
    assert free.allows_resolution("480p") and not free.allows_resolution("720p")
    assert DEFAULT_PLANS["pro"].allows_resolution("720p")
