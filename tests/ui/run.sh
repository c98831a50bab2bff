#!/usr/bin/env bash
# The /ui dashboard in headless Chromium against a local stack started for the run.
#   tests/ui/run.sh [--no-build] [-- NODE_TEST_ARGS...]
# Installs what is missing (Chromium from Debian, playwright-core with npm ci, the project venv), builds
# local-stack (unless --no-build), starts moto + fake Bedrock + the local API, seeds users and usage, runs
# `node --test`, stops the stack. Screenshots: tests/ui/output/ (or $UI_TEST_OUTPUT).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
build=1
node_args=()
while [[ $# -gt 0 ]]; do
  case "$1" in
    --no-build) build=0; shift ;;
    --) shift; node_args=("$@"); break ;;
    -h|--help) sed -n '2,6p' "$0"; exit 0 ;;
    *) echo "unknown argument: $1 (see --help)" >&2; exit 2 ;;
  esac
done

chromium_path="${CHROMIUM_PATH:-/usr/bin/chromium}"
if [[ ! -x "$chromium_path" ]]; then
  echo "ui: installing chromium (Debian package)" >&2
  sudo=""
  [[ $(id -u) -ne 0 ]] && sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq chromium >/dev/null
fi
export CHROMIUM_PATH="$chromium_path"

cd "$here"
if [[ ! -d node_modules/playwright-core ]] || [[ package-lock.json -nt node_modules/.package-lock.json ]]; then
  echo "ui: npm ci" >&2
  npm ci --no-audit --no-fund --loglevel=error
fi

python3 "$root/scripts/lib/venv_bootstrap.py" ensure
if [[ $build -eq 1 ]]; then
  (cd "$root" && cargo build -p local-stack)
fi

output="${UI_TEST_OUTPUT:-$here/output}"
rm -rf "$output"
mkdir -p "$output"
status=0
"$root/.venv/bin/python" "$here/with_stack.py" "$output" -- \
  node --test --test-concurrency=1 --test-reporter=spec "${node_args[@]}" "$here/dashboard.test.mjs" \
  | tee "$output/node-test.log" || status=$?
# No skipped or todo test passes silently (as in the pytest steps).
if grep -Eq '^[^ ]+ (skipped|todo) [1-9]' "$output/node-test.log"; then
  echo "ui: a test was skipped or left todo; none may be" >&2
  [[ $status -eq 0 ]] && status=1
fi
echo "ui: screenshots and stack logs in $output" >&2
exit $status
