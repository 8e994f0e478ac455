"""One job at a time (a tuning or a preview): the lock, cancel and the host's Interrupt, the progress snapshot,
and how long runs take here.

``Jobs.running`` holds the lock for one job with a fresh cancel flag; the
status it keeps is what the progress endpoint shows. After each tuning its
time per step and to prepare are kept per kind of device (``TIMING_FILE``,
beside the embeddings), so the tab can say how long the next run will take.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable, Iterator, Optional

from .records import as_float, now, read_record, update_record

log = logging.getLogger(__name__)

TIMING_FILE = "celebbasis-timing.json"  # per device kind: the last run's seconds per step and to prepare


@dataclass
class JobStatus:
    busy: bool = False
    name: str = ""
    step: int = 0
    total: int = 0
    loss: Optional[float] = None
    eta_seconds: Optional[float] = None
    started: Optional[float] = None
    message: str = ""


class Jobs:
    """See the module docstring."""

    def __init__(self):
        self.lock = threading.Lock()
        self._cancel = threading.Event()
        self._status = JobStatus()
        self._status_lock = threading.Lock()

    @property
    def busy(self) -> bool:
        return self.lock.locked()

    @contextlib.contextmanager
    def running(self, name: str, total: int, message: str) -> Iterator[None]:
        """Run one job: wait for the lock, clear an earlier cancel request, show it busy until it ends."""
        with self.lock:
            self._cancel.clear()
            self.set_status(busy=True, name=name, step=0, total=total, loss=None, eta_seconds=None,
                            started=time.time(), message=message)
            try:
                yield
            finally:
                self.set_status(busy=False)

    def cancel(self, host_interrupt: Optional[Callable[[], None]] = None) -> None:
        """Ask the running job to stop; while one of ours runs, ``host_interrupt`` stops the host's sampler too
        (a preview renders through it). With none running the host is left alone, so the tab's Interrupt never
        stops someone else's generation."""
        self._cancel.set()
        if self.busy and host_interrupt is not None:
            try:
                host_interrupt()
            except Exception:  # noqa: BLE001 - our own flag is set; the host's is a bonus
                log.warning("could not interrupt the host", exc_info=True)

    def cancelled(self, *callbacks: Optional[Callable[[], bool]]) -> bool:
        """Our cancel flag, or any of ``callbacks`` (the host's Interrupt, a caller's) asking to stop."""
        return self._cancel.is_set() or any(callback is not None and callback() for callback in callbacks)

    def set_status(self, **changes) -> None:
        with self._status_lock:
            for key, value in changes.items():
                setattr(self._status, key, value)

    def progress(self) -> dict:
        """A snapshot for the progress endpoint: busy, name, step, total, loss, eta_seconds, message."""
        with self._status_lock:
            status = replace(self._status)
        return {"busy": status.busy, "name": status.name, "step": status.step, "total": status.total,
                "loss": status.loss, "eta_seconds": status.eta_seconds, "message": status.message,
                "elapsed_seconds": round(time.time() - status.started, 1) if status.started and status.busy else None}


# ---------------------------------------------------------------------- how long runs take here
def device_kind(device: Optional[str]) -> Optional[str]:
    """"cuda:1" -> "cuda"; None stays None."""
    return str(device).split(":")[0].strip().lower() or None if device else None


def record_timing(folder: Path, name: str, device, result, seconds: float) -> None:
    """After a tuning: its seconds per step (the loop) and to prepare (the rest of ``seconds``: faces, basis,
    augmented views, saving), for the next run on this kind of device."""
    kind = device_kind(None if device is None else str(device))
    if not kind or not result.steps:
        return

    def change(timings: dict) -> bool:
        timings[kind] = {"name": name, "step_seconds": round(result.loop_seconds / result.steps, 4),
                         "setup_seconds": round(max(0.0, seconds - result.loop_seconds), 2),
                         "steps": result.steps, "measured": now()}
        timings["last"] = kind
        return True

    try:
        update_record(folder / TIMING_FILE, change)
    except OSError:  # the embedding is saved; the estimate is advice
        log.warning("could not record the run's timing", exc_info=True)


def expected_time(folder: Path, device: Optional[str], steps: int) -> Optional[dict]:
    """How long ``steps`` steps should take, from the last run measured on ``device``'s kind (any kind when the
    device is unknown): seconds, step_seconds, setup_seconds and name (what that run made); None if none was."""
    timings = read_record(folder / TIMING_FILE)
    kind = device_kind(device)
    record = timings.get(kind) if kind else timings.get(timings.get("last", ""))
    if not isinstance(record, dict) or as_float(record.get("step_seconds")) is None:
        return None
    step, setup = as_float(record["step_seconds"]), as_float(record.get("setup_seconds")) or 0.0
    return {"seconds": setup + int(steps) * step, "step_seconds": step, "setup_seconds": setup,
            "name": record.get("name")}
