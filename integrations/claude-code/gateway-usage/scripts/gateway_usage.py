#!/usr/bin/env python3
"""Your bedrock-metering usage, read from the gateway with your gateway key (Python standard library only).

    gateway_usage.py statusline   one line for Claude Code's status line: today's tokens, the month's estimated
                                  cost, the budget left (when the gateway serves /v1/gateway-key/limits/me);
                                  cached, at most one gateway call per 30 s; never fails (prints a short
                                  fallback and exits 0)
    gateway_usage.py week         the last 7 days, one row per UTC day, and the totals (the /usage command)

The gateway is ANTHROPIC_BASE_URL, the environment Claude Code runs with. The key, as the proxy reads it:
`x-gateway-key` in ANTHROPIC_CUSTOM_HEADERS (passthrough mode), else ANTHROPIC_API_KEY (x-api-key), else
ANTHROPIC_AUTH_TOKEN (Authorization: Bearer). The report is GET /v1/gateway-key/usage/me: the key's tenant,
the same numbers as GET /v1/usage/me and the /ui dashboard. Tokens are input + output tokens.

Environment (all optional):
    GATEWAY_USAGE_TIMEOUT_SECONDS  per gateway call (default 2, at most 10)
    GATEWAY_USAGE_CACHE_SECONDS    how long the status line reuses an answer (default 30; never less)
    XDG_CACHE_HOME                 the cache lives in $XDG_CACHE_HOME/bedrock-metering (default ~/.cache)
"""
from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

USAGE_PATH = "/v1/gateway-key/usage/me"
LIMITS_PATH = "/v1/gateway-key/limits/me"
MIN_CACHE_SECONDS = 30
FALLBACK = "gateway: usage unavailable"
NOT_CONFIGURED = "gateway: ANTHROPIC_BASE_URL or gateway key not set"


class GatewayError(Exception):
    """The gateway could not be asked, or its answer could not be read."""


# ------------------------------------------------------------------ the gateway

def credentials(env: dict[str, str]) -> tuple[str, dict[str, str]] | None:
    """The gateway's base URL and the header carrying the key, or None when either is missing."""
    base_url = env.get("ANTHROPIC_BASE_URL", "").strip().rstrip("/")
    if not base_url.startswith(("http://", "https://")):
        return None
    for line in env.get("ANTHROPIC_CUSTOM_HEADERS", "").splitlines():
        name, _, value = line.partition(":")
        if name.strip().lower() == "x-gateway-key" and value.strip():
            return base_url, {"x-gateway-key": value.strip()}
    if env.get("ANTHROPIC_API_KEY", "").strip():
        return base_url, {"x-api-key": env["ANTHROPIC_API_KEY"].strip()}
    if env.get("ANTHROPIC_AUTH_TOKEN", "").strip():
        return base_url, {"authorization": f"Bearer {env['ANTHROPIC_AUTH_TOKEN'].strip()}"}
    return None


def timeout_seconds(env: dict[str, str]) -> float:
    try:
        return min(max(float(env.get("GATEWAY_USAGE_TIMEOUT_SECONDS", "2")), 0.1), 10.0)
    except ValueError:
        return 2.0


def get_json(base_url: str, headers: dict[str, str], path: str, params: dict[str, str], timeout: float) -> dict:
    """GET a JSON object; GatewayError on anything but a 200 with a JSON object."""
    url = f"{base_url}{path}?{urllib.parse.urlencode(params)}" if params else f"{base_url}{path}"
    request = urllib.request.Request(url, headers={**headers, "accept": "application/json",
                                                   "user-agent": "bedrock-metering-claude-code-plugin"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            body = json.loads(response.read(1_000_000))
    except (urllib.error.URLError, OSError, ValueError) as error:
        raise GatewayError(str(error)) from None
    if not isinstance(body, dict):
        raise GatewayError("the answer is not a JSON object")
    return body


def usage_report(base_url: str, headers: dict[str, str], days: int, timeout: float) -> dict:
    return get_json(base_url, headers, USAGE_PATH, {"days": str(days)}, timeout)


def remaining_budget(base_url: str, headers: dict[str, str], timeout: float) -> str | None:
    """The budget left, from GET /v1/gateway-key/limits/me when it answers 200; None otherwise."""
    try:
        limits = get_json(base_url, headers, LIMITS_PATH, {}, timeout)
    except GatewayError:
        return None
    return budget_text(limits)


def budget_text(limits: object) -> str | None:
    """The budget left this month, from the body of `GET /v1/limits/me` (`{"limits": {kind: {"remaining", ...} |
    null}, "key": {"limits": {...}}}`): the USD budget if one is set, else the monthly tokens. When both the tenant
    and the key have one, the smaller remainder holds. None when neither is set (unlimited: nothing to show)."""
    if not isinstance(limits, dict):
        return None
    sections = [limits.get("limits")]
    key = limits.get("key")
    if isinstance(key, dict):
        sections.append(key.get("limits"))

    def smallest_remaining(kind: str) -> float | None:
        values = []
        for section in sections:
            entry = section.get(kind) if isinstance(section, dict) else None
            remaining = entry.get("remaining") if isinstance(entry, dict) else None
            if isinstance(remaining, (int, float)) and not isinstance(remaining, bool):
                values.append(float(remaining))
        return min(values) if values else None

    usd = smallest_remaining("usd_per_month")
    if usd is not None:
        return f"${max(usd, 0):,.2f} left"
    tokens = smallest_remaining("tokens_per_month")
    if tokens is not None:
        return f"{int(max(tokens, 0)):,} tok left"
    return None


# ------------------------------------------------------------------ the numbers

def today_utc() -> dt.date:
    return dt.datetime.now(dt.timezone.utc).date()


def tokens_of(stats: dict) -> int:
    return int(stats.get("input_tokens", 0)) + int(stats.get("output_tokens", 0))


def cost_text(cost: object) -> str:
    return f"${cost:,.2f}" if isinstance(cost, (int, float)) and not isinstance(cost, bool) else "cost n/a"


def status_line(env: dict[str, str]) -> str:
    found = credentials(env)
    if found is None:
        return NOT_CONFIGURED
    base_url, headers = found
    timeout = timeout_seconds(env)
    today = today_utc()
    # One report from the 1st of the month to today gives both today's tokens and the month's cost.
    report = usage_report(base_url, headers, today.day, timeout)
    day = report.get("daily_stats", {}).get(today.isoformat(), {})
    parts = [f"{tokens_of(day):,} tok today", f"{cost_text(report.get('summary', {}).get('estimated_cost_usd'))} this month"]
    budget = remaining_budget(base_url, headers, timeout)
    if budget:
        parts.append(budget)
    return "gateway: " + " · ".join(parts)


def week_table(env: dict[str, str]) -> str:
    found = credentials(env)
    if found is None:
        return NOT_CONFIGURED
    base_url, headers = found
    report = usage_report(base_url, headers, 7, timeout_seconds(env))
    rows = [("day (UTC)", "requests", "input tokens", "output tokens")]
    for day, stats in sorted(report.get("daily_stats", {}).items()):
        rows.append((day, f"{stats.get('requests', 0):,}", f"{stats.get('input_tokens', 0):,}", f"{stats.get('output_tokens', 0):,}"))
    summary = report.get("summary", {})
    rows.append(("total", f"{summary.get('total_requests', 0):,}", f"{summary.get('total_input_tokens', 0):,}",
                 f"{summary.get('total_output_tokens', 0):,}"))
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    lines = [f"Gateway usage of tenant {report.get('tenant_id', '?')}, {report.get('from', '?')} to {report.get('to', '?')}"]
    for index, row in enumerate(rows):
        if index == len(rows) - 1:
            lines.append("  ".join("-" * width for width in widths))
        lines.append("  ".join([row[0].ljust(widths[0]), *(cell.rjust(width) for cell, width in zip(row[1:], widths[1:]))]))
    lines.append(f"estimated cost: {cost_text(summary.get('estimated_cost_usd'))}")
    lines.extend(f"warning: {warning}" for warning in report.get("warnings", []))
    return "\n".join(lines)


# ------------------------------------------------------------------ the cache

def cache_file(env: dict[str, str]) -> Path:
    root = Path(env.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "bedrock-metering"
    found = credentials(env)
    # One entry per gateway and key; the key itself is never written, only a hash of it.
    identity = json.dumps(found, sort_keys=True) if found else "unconfigured"
    return root / f"statusline-{hashlib.sha256(identity.encode()).hexdigest()[:16]}.json"


def cache_seconds(env: dict[str, str]) -> float:
    try:
        return max(float(env.get("GATEWAY_USAGE_CACHE_SECONDS", MIN_CACHE_SECONDS)), MIN_CACHE_SECONDS)
    except ValueError:
        return MIN_CACHE_SECONDS


def cached_status_line(env: dict[str, str]) -> str:
    """The status line, from the cache when it is younger than the cache period (errors are cached too, so
    an unreachable gateway is not asked on every refresh either)."""
    path = cache_file(env)
    try:
        entry = json.loads(path.read_text())
        if 0 <= time.time() - float(entry["fetched_at"]) < cache_seconds(env) and isinstance(entry["line"], str):
            return entry["line"]
    except (OSError, ValueError, KeyError, TypeError):
        pass
    try:
        line = status_line(env)
    except GatewayError:
        line = FALLBACK
    try:
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        with tempfile.NamedTemporaryFile("w", dir=path.parent, delete=False, suffix=".tmp") as handle:
            json.dump({"fetched_at": time.time(), "line": line}, handle)
        os.replace(handle.name, path)
    except OSError:
        pass
    return line


def main(argv: list[str]) -> int:
    env = dict(os.environ)
    command = argv[1] if len(argv) > 1 else "statusline"
    if command == "statusline":
        try:
            print(cached_status_line(env))
        except Exception:  # noqa: BLE001 - a status line never fails
            print(FALLBACK)
        return 0
    if command == "week":
        try:
            print(week_table(env))
        except GatewayError as error:
            print(f"the gateway's usage could not be read: {error}")
            return 1
        return 0
    print(__doc__.strip())
    return 0 if command in ("-h", "--help", "help") else 2


if __name__ == "__main__":
    sys.exit(main(sys.argv))
