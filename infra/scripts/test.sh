#!/usr/bin/env bash
# Every infra check, from a fresh clone, offline (npm registry aside), without AWS credentials or a Rust
# build: npm ci, typecheck, unit and template tests (cdk-nag included), cfn-lint. `infra/scripts/test.sh --help`.
set -euo pipefail

usage() {
  cat <<'USAGE'
Usage: infra/scripts/test.sh [--skip-install]

  1. npm ci                      (exact versions from package-lock.json)
  2. tsc --noEmit                (typecheck bin/, lib/, test/)
  3. npm test                    (template assertions and cdk-nag AwsSolutions, node --test)
  4. scripts/lint.sh             (cfn-lint on the synthesized templates)

cfn-lint comes from <repo>/.venv (scripts/requirements-infra.txt); it is installed there when missing.

  --skip-install   reuse node_modules as is (faster local loops)
  -h, --help
USAGE
}

skip_install=false
for arg in "$@"; do
  case "$arg" in
    -h|--help) usage; exit 0 ;;
    --skip-install) skip_install=true ;;
    *) echo "test.sh: unknown argument: $arg (see --help)" >&2; exit 2 ;;
  esac
done

infra_dir="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
repo_dir="$(cd "$infra_dir/.." && pwd)"
cd "$infra_dir"

for tool in node npm python3; do
  command -v "$tool" >/dev/null || { echo "test.sh: $tool is required but not on PATH" >&2; exit 1; }
done
node_major="$(node -p 'process.versions.node.split(".")[0]')"
if (( node_major < 20 )); then
  echo "test.sh: Node.js >= 20 is required (found $(node --version))" >&2
  exit 1
fi

started=$SECONDS
step() { echo; echo "== infra: $* ($((SECONDS - started)) s)"; }
# The CDK CLI must not try to send telemetry from tests.
export CDK_DISABLE_CLI_TELEMETRY=true

if [[ "$skip_install" == false ]]; then
  step "npm ci"
  npm ci --no-audit --no-fund --loglevel=error
fi

if [[ ! -x "$repo_dir/.venv/bin/cfn-lint" ]]; then
  step "installing cfn-lint into $repo_dir/.venv"
  [[ -x "$repo_dir/.venv/bin/pip" ]] || python3 -m venv "$repo_dir/.venv"
  "$repo_dir/.venv/bin/pip" install --quiet -r "$repo_dir/scripts/requirements-infra.txt"
fi

step "typecheck (tsc --noEmit)"
npx --no-install tsc --noEmit

step "tests (template assertions, cdk-nag)"
npm test --silent

step "cfn-lint"
bash "$infra_dir/scripts/lint.sh"

echo
echo "== infra: all checks passed in $((SECONDS - started)) s"
