"""What a job costs: whole credits per second of output video by resolution, with a
minimum billed duration, seconds rounded up."""
from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass


@dataclass(frozen=True)
class PriceTable:
    credits_per_second: Mapping[str, int]
    min_billed_duration_s: int

    def price(self, duration_s: float, resolution: str) -> int:
        """Credits for `duration_s` seconds of output at `resolution`."""
        rate = self.credits_per_second[resolution]
        # A float duration like 5.000000001 from a probe should not bill a 6th second.
        billed_s = max(self.min_billed_duration_s, math.ceil(round(max(duration_s, 0.0), 3)))
        return billed_s * rate

    def minimum_charge(self, resolution: str) -> int:
        return self.price(0.0, resolution)
