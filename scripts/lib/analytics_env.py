"""Make sure the analytics packages (scripts/requirements-analytics.txt: DuckDB) are in the project venv.

venv_bootstrap.py installs every scripts/requirements*.txt; this is the fallback for a venv made before the
file existed (or by hand): the analytics commands install what is missing on first use.
"""
from __future__ import annotations

import fcntl
import hashlib
import subprocess
import sys
import tempfile
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
REQUIREMENTS = REPO_ROOT / "scripts" / "requirements-analytics.txt"


def _stamp_path() -> Path:
    return Path(sys.prefix) / ".requirements-analytics.sha256"


def _wanted() -> str:
    return hashlib.sha256(REQUIREMENTS.read_bytes() + sys.version.split()[0].encode()).hexdigest()


def _current() -> bool:
    stamp = _stamp_path()
    return stamp.exists() and stamp.read_text().strip() == _wanted()


def ensure_analytics_packages() -> None:
    """pip-install requirements-analytics.txt into the running venv unless DuckDB is already there."""
    try:
        import duckdb  # noqa: F401

        return
    except ImportError:
        pass
    if _current():
        return
    if sys.prefix == sys.base_prefix:
        sys.exit("analytics: run through the project venv (scripts/query, scripts/reconcile...), not bare python3")
    lock_path = Path(tempfile.gettempdir()) / f"bedrock-metering-analytics-{hashlib.sha256(sys.prefix.encode()).hexdigest()[:16]}.lock"
    with open(lock_path, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if _current():
            return
        print(f"venv: installing {REQUIREMENTS.relative_to(REPO_ROOT)}", file=sys.stderr)
        result = subprocess.run(
            [sys.executable, "-m", "pip", "install", "--disable-pip-version-check", "--quiet", "-r", str(REQUIREMENTS)]
        )
        if result.returncode != 0:
            sys.exit("venv: pip install of the analytics packages failed (is PyPI reachable?); see above")
        _stamp_path().write_text(_wanted() + "\n")
