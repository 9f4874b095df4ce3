"""The read side of jobs: `JobView` (the columns a job's public form needs), read with one
Core query, and a bounded in-process cache of finished jobs' views, which is exact because
a job's row never changes again once it is completed, failed or canceled."""
from __future__ import annotations

import datetime as dt
import threading
from collections import OrderedDict
from dataclasses import dataclass

from sqlalchemy import Connection, bindparam, select

from gateway.models import Job
from proto.vocabulary import TERMINAL_STATUSES

MAX_CACHED_JOBS = 10_000


@dataclass(frozen=True, slots=True)
class JobView:
    id: str
    model: str
    status: str
    seed: int
    form_state_json: str
    output_key: str | None
    error: str
    error_code: str
    execution_time_ms: int | None
    timings_json: str | None
    created_at: dt.datetime
    completed_at: dt.datetime | None


_OWNED_JOB_QUERY = select(*(Job.__table__.c[name] for name in JobView.__slots__)).where(
    Job.id == bindparam("job_id"), Job.account_id == bindparam("account_id")
)


def read_owned_job(connection: Connection, account_id: str, job_id: str) -> JobView | None:
    """The job if it exists and belongs to the account, else None (no ORM, one statement)."""
    row = connection.execute(
        _OWNED_JOB_QUERY, {"job_id": job_id, "account_id": account_id}
    ).first()
    return None if row is None else JobView(*row)


class FinishedJobs:
    """Views of finished jobs by (account, job id), least recently read dropped first."""

    def __init__(self, max_entries: int = MAX_CACHED_JOBS) -> None:
        self._max_entries = max_entries
        self._views: OrderedDict[tuple[str, str], JobView] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, account_id: str, job_id: str) -> JobView | None:
        with self._lock:
            view = self._views.get((account_id, job_id))
            if view is not None:
                self._views.move_to_end((account_id, job_id))
            return view

    def remember(self, account_id: str, view: JobView) -> None:
        if view.status not in TERMINAL_STATUSES:
            return  # still changing: always read fresh
        with self._lock:
            self._views[(account_id, view.id)] = view
            self._views.move_to_end((account_id, view.id))
            while len(self._views) > self._max_entries:
                self._views.popitem(last=False)

    def forget(self, account_id: str, job_id: str) -> None:
        """Drop a view whose row did change after all (its output was deleted)."""
        with self._lock:
            self._views.pop((account_id, job_id), None)
