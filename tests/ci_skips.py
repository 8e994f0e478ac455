"""With ``CI=true``, a skipped test fails the run unless it is on ``ALLOWED_SKIPS``.

Why: a failed Chromium install or a gradio import error used to turn the
browser and tab tests into skips (module-level ones into "no tests
collected") and CI stayed green. In CI every skip is now an error, except
the few named below, each with the reason it is acceptable there. Outside
CI a skip stays a skip. Registered by ``tests/conftest.py``.
"""

from __future__ import annotations

import fnmatch
import os

import pytest

# node id pattern (fnmatch, as pytest prints it) -> why this skip is acceptable in CI
ALLOWED_SKIPS: dict = {}

HOW_TO_FIX = ("CI=true: only the skips listed in tests/ci_skips.py ALLOWED_SKIPS may happen in CI; "
              "install what is missing, or add the test there with the reason it may be skipped")

forbidden: list = []  # (node id, skip reason) of this session, for the summary


def in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in ("true", "1", "yes")


def allowed(nodeid: str) -> bool:
    return any(fnmatch.fnmatchcase(nodeid, pattern) for pattern in ALLOWED_SKIPS)


def skip_reason(report) -> str:
    longrepr = report.longrepr
    if isinstance(longrepr, tuple) and len(longrepr) == 3:  # (path, line, "Skipped: reason")
        path, line, message = longrepr
        return f"{message.removeprefix('Skipped: ')} ({os.path.relpath(path)}:{line})"
    return str(longrepr)


def forbid(report) -> None:
    """Turn a skip report into a failure whose first line says what was skipped and why."""
    reason = skip_reason(report)
    forbidden.append((report.nodeid, reason))
    report.outcome = "failed"
    report.longrepr = f"skipped in CI: {reason}\n{HOW_TO_FIX}"


def _guard(report) -> None:
    if report.skipped and not hasattr(report, "wasxfail") and in_ci() and not allowed(report.nodeid):
        forbid(report)


@pytest.hookimpl(hookwrapper=True)
def pytest_make_collect_report(collector):
    """Module-level ``pytest.skip`` / ``importorskip`` skip the collector: fail its collection instead."""
    outcome = yield
    _guard(outcome.get_result())


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    _guard(outcome.get_result())


def pytest_terminal_summary(terminalreporter):
    if forbidden:
        terminalreporter.section("skips that fail the run (CI=true)", sep="=", red=True, bold=True)
        for nodeid, reason in forbidden:
            terminalreporter.line(f"{nodeid}: {reason}")
        terminalreporter.line(HOW_TO_FIX)


def pytest_sessionfinish(session):
    if forbidden and session.exitstatus in (pytest.ExitCode.OK, pytest.ExitCode.NO_TESTS_COLLECTED):
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
