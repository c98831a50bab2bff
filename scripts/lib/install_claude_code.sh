#!/usr/bin/env bash
# Installs the Claude Code CLI (npm @anthropic-ai/claude-code, pinned) into a project-local prefix,
# .local/claude-code (ignored by git), for tests/e2e/test_claude_code.py. Skips the install when that
# version is already there. Prints the path of the `claude` binary on its last line.
#   CLAUDE_CODE_PREFIX  another prefix (default: <repo>/.local/claude-code)
set -euo pipefail

CLAUDE_CODE_VERSION="2.1.332"

root="$(cd "$(dirname "$0")/../.." && pwd)"
prefix="${CLAUDE_CODE_PREFIX:-$root/.local/claude-code}"
bin="$prefix/node_modules/.bin/claude"

installed_version() { "$bin" --version 2>/dev/null | awk '{print $1}'; }

if [[ -x "$bin" && "$(installed_version)" == "$CLAUDE_CODE_VERSION" ]]; then
  echo "claude-code $CLAUDE_CODE_VERSION already installed in $prefix" >&2
else
  command -v npm >/dev/null || { echo "error: npm is required to install the Claude Code CLI" >&2; exit 1; }
  mkdir -p "$prefix"
  # The package carries the native binary as a per-platform optional dependency; its postinstall step
  # (which npm 11 does not run unapproved) is not needed: bin/claude.exe finds that binary itself.
  npm install --prefix "$prefix" --no-audit --no-fund --loglevel=error \
    "@anthropic-ai/claude-code@$CLAUDE_CODE_VERSION" >&2
  version="$(installed_version)"
  if [[ "$version" != "$CLAUDE_CODE_VERSION" ]]; then
    echo "error: installed claude reports version '$version', expected $CLAUDE_CODE_VERSION" >&2
    exit 1
  fi
  echo "claude-code $CLAUDE_CODE_VERSION installed in $prefix" >&2
fi
echo "$bin"
