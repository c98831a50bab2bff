"""The local stack's state on disk: `.local/stack.env` and the local users' passwords.

`.local/` can be moved with BM_LOCAL_DIR (the e2e test of scripts/dev uses a temporary one).
stack.env holds shell `KEY=value` lines (values shell-quoted), so `source .local/stack.env` works.
"""
from __future__ import annotations

import json
import os
import shlex
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]


def local_dir() -> Path:
    return Path(os.environ.get("BM_LOCAL_DIR") or REPO_ROOT / ".local").resolve()


def state_file() -> Path:
    return local_dir() / "stack.env"


def write_state(values: dict[str, str]) -> Path:
    path = state_file()
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = ["# Written by scripts/dev; `source` it to reach the local stack. Removed by `scripts/dev stop`."]
    lines += [f"{key}={shlex.quote(str(value))}" for key, value in values.items()]
    tmp = path.with_suffix(".tmp")
    tmp.write_text("\n".join(lines) + "\n")
    tmp.replace(path)
    return path


def read_state() -> dict[str, str] | None:
    """The values of stack.env, or None when there is none."""
    path = state_file()
    if not path.exists():
        return None
    values: dict[str, str] = {}
    for line in path.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#") or "=" not in line:
            continue
        key, raw = line.split("=", 1)
        parts = shlex.split(raw)
        values[key] = parts[0] if parts else ""
    return values


def remove_state() -> None:
    state_file().unlink(missing_ok=True)


class PasswordStore:
    """Passwords of the local stack's users (`.local/users.json`, mode 0600). Never used for AWS users."""

    def __init__(self, directory: Path | None = None):
        self.path = (directory or local_dir()) / "users.json"

    def _load(self) -> dict[str, str]:
        return json.loads(self.path.read_text()) if self.path.exists() else {}

    def get(self, username: str) -> str | None:
        return self._load().get(username)

    def put(self, username: str, password: str) -> None:
        users = self._load()
        users[username] = password
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as out:
            json.dump(users, out, indent=2)

    def clear(self) -> None:
        self.path.unlink(missing_ok=True)
