#!/usr/bin/env python3
"""Make sure the project venv (.venv/) exists and matches scripts/requirements.txt.

Standard library only: this runs under the system python3 before anything is installed.

    python3 scripts/lib/venv_bootstrap.py ensure          # create/refresh .venv, print nothing when current
    python3 scripts/lib/venv_bootstrap.py run FILE ARGS   # ensure, then exec FILE with the venv's python

The venv is (re)installed when it is missing or when the requirements file changed since the last
install: a sha256 stamp of the file (and of the interpreter version) is kept in .venv/.requirements.sha256.
"""
from __future__ import annotations

import fcntl
import hashlib
import os
import subprocess
import sys
import tempfile
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
VENV_DIR = REPO_ROOT / ".venv"
REQUIREMENTS = REPO_ROOT / "scripts" / "requirements.txt"
# Every requirements file: the local stack's, and those of the analytics, infra and proxy checks. One venv
# holds them all, so a fresh clone's `scripts/test` has every tool before any test starts.
def requirement_files() -> list[Path]:
    return [REQUIREMENTS, *sorted(p for p in REQUIREMENTS.parent.glob("requirements-*.txt"))]
STAMP = VENV_DIR / ".requirements.sha256"


def venv_python() -> Path:
    return VENV_DIR / "bin" / "python"


def _wanted_stamp() -> str:
    digest = hashlib.sha256()
    for path in requirement_files():
        digest.update(path.name.encode() + b"\0" + path.read_bytes())
    digest.update(sys.version.split()[0].encode())
    return digest.hexdigest()


def _lock_path() -> Path:
    # Outside the repo, so no stray file appears at the top level; keyed by the repo path.
    key = hashlib.sha256(str(REPO_ROOT).encode()).hexdigest()[:16]
    return Path(tempfile.gettempdir()) / f"bedrock-metering-venv-{key}.lock"


def is_current() -> bool:
    return venv_python().exists() and STAMP.exists() and STAMP.read_text().strip() == _wanted_stamp()


def ensure_venv(quiet: bool = True) -> Path:
    """Create or refresh .venv; return the path of its python. Serialised across processes."""
    if is_current():
        return venv_python()
    with open(_lock_path(), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if is_current():  # another process did it while we waited
            return venv_python()
        if not venv_python().exists():
            print(f"venv: creating {VENV_DIR}", file=sys.stderr)
            result = subprocess.run([sys.executable, "-m", "venv", str(VENV_DIR)])
            if result.returncode != 0:
                sys.exit(
                    "venv: `python3 -m venv` failed. On Debian/Ubuntu install the venv module first: "
                    "apt-get install python3-venv"
                )
        names = ", ".join(str(p.relative_to(REPO_ROOT)) for p in requirement_files())
        print(f"venv: installing {names}", file=sys.stderr)
        pip = [str(venv_python()), "-m", "pip", "install", "--disable-pip-version-check"]
        if quiet:
            pip.append("--quiet")
        result = subprocess.run(pip + [arg for path in requirement_files() for arg in ("-r", str(path))])
        if result.returncode != 0:
            sys.exit("venv: pip install failed (is PyPI reachable?); see the output above")
        STAMP.write_text(_wanted_stamp() + "\n")
    return venv_python()


def main(argv: list[str]) -> None:
    if not argv or argv[0] in ("-h", "--help"):
        print(__doc__.strip())
        return
    command, rest = argv[0], argv[1:]
    if command == "ensure":
        ensure_venv(quiet="--verbose" not in rest)
    elif command == "run":
        if not rest:
            sys.exit("usage: venv_bootstrap.py run FILE [ARGS...]")
        python = str(ensure_venv())
        # Tests and tools import each other from scripts/lib; bytecode caches would litter the tree.
        os.environ.setdefault("PYTHONDONTWRITEBYTECODE", "1")
        os.execv(python, [python, *rest])
    else:
        sys.exit(f"unknown command {command!r}; try --help")


if __name__ == "__main__":
    main(sys.argv[1:])
