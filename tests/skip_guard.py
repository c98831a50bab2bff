"""A pytest plugin: the run fails if any test skips (or a module skips at import) unless its node id is
in the allow-list with a reason. A missing tool is an install step of scripts/test, never a skip.

The allow-list is tests/skip-allowlist.txt (or the file named by BM_SKIP_ALLOWLIST): one `NODE_ID | reason`
a line, `#` comments. Loaded by tests/conftest.py; `-p skip_guard` loads it elsewhere.
"""
from __future__ import annotations

import os
from pathlib import Path

import pytest

DEFAULT_ALLOWLIST = Path(__file__).resolve().parent / "skip-allowlist.txt"
_unexpected_skips: list[tuple[str, str]] = []


def allowlist_path() -> Path:
    return Path(os.environ.get("BM_SKIP_ALLOWLIST") or DEFAULT_ALLOWLIST)


def allowed_skips(path: Path) -> dict[str, str]:
    """The allow-list's entries; one without a reason is refused."""
    allowed = {}
    for number, raw in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        node_id, separator, reason = line.partition(" | ")
        if not separator or not node_id.strip() or not reason.strip():
            raise pytest.UsageError(f"{path}:{number}: expected 'NODE_ID | reason', got {raw!r}")
        allowed[node_id.strip()] = reason.strip()
    return allowed


_allowed: dict[str, str] = {}


def pytest_configure(config):
    _allowed.update(allowed_skips(allowlist_path()))  # fails fast on a malformed entry


def _note_skip(report) -> None:
    if report.nodeid in _allowed:
        return
    longrepr = report.longrepr
    reason = str(longrepr[2]) if isinstance(longrepr, tuple) and len(longrepr) == 3 else str(longrepr)
    _unexpected_skips.append((report.nodeid, reason.removeprefix("Skipped: ")))


def pytest_collectreport(report):
    if report.skipped:  # a module skipped as a whole (importorskip, allow_module_level=True)
        _note_skip(report)


def pytest_runtest_logreport(report):
    if report.skipped and not hasattr(report, "wasxfail"):
        _note_skip(report)


def pytest_sessionfinish(session, exitstatus):
    if _unexpected_skips and exitstatus in (pytest.ExitCode.OK, pytest.ExitCode.NO_TESTS_COLLECTED):
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def pytest_terminal_summary(terminalreporter):
    if _unexpected_skips:
        terminalreporter.section(f"skipped, and not in {allowlist_path()}: the run fails", red=True)
        for node_id, reason in _unexpected_skips:
            terminalreporter.write_line(f"SKIP NOT ALLOWED {node_id}: {reason}")
