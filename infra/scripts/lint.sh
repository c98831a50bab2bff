#!/usr/bin/env bash
# Synthesizes both stacks offline (placeholder Lambda packages, no AWS account) into a temporary directory
# and runs cfn-lint on the templates. `infra/scripts/lint.sh --help`.
set -euo pipefail

usage() {
  cat <<'USAGE'
Usage: infra/scripts/lint.sh [--keep]

Synthesizes BedrockMeteringStack and MeteringAnalyticsStack with -c lambdaAssetDir=test/placeholder-lambda
(no Rust build, no AWS credentials), and MeteringAnalyticsStack again with -c exportMode=stream, and lints
the templates with cfn-lint from the project venv
(<repo>/.venv/bin/cfn-lint, see scripts/requirements-infra.txt).

Ignored on purpose: W3005 (redundant DependsOn), which the CDK itself emits for Lambda functions
(DependsOn on the role next to GetAtt Role.Arn). Any other finding fails.

  --keep   keep the synthesized cloud assembly and print its path
  -h, --help
Environment: LINT_REGION (default us-east-1) - region to synthesize for and lint against.
USAGE
}

keep=false
for arg in "$@"; do
  case "$arg" in
    -h|--help) usage; exit 0 ;;
    --keep) keep=true ;;
    *) echo "lint.sh: unknown argument: $arg (see --help)" >&2; exit 2 ;;
  esac
done

infra_dir="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
repo_dir="$(cd "$infra_dir/.." && pwd)"
cfn_lint="$repo_dir/.venv/bin/cfn-lint"
region="${LINT_REGION:-us-east-1}"

if [[ ! -x "$cfn_lint" ]]; then
  echo "lint.sh: $cfn_lint not found. Install it with:" >&2
  echo "  python3 -m venv $repo_dir/.venv && $repo_dir/.venv/bin/pip install -r $repo_dir/scripts/requirements-infra.txt" >&2
  exit 1
fi
if [[ ! -x "$infra_dir/node_modules/.bin/cdk" ]]; then
  echo "lint.sh: the CDK CLI is not installed: run 'npm ci' in $infra_dir" >&2
  exit 1
fi

out="$(mktemp -d "${TMPDIR:-/tmp}/bm-cdk-lint.XXXXXX")"
synth_log="$(mktemp "${TMPDIR:-/tmp}/bm-cdk-lint-synth.XXXXXX")"
if [[ "$keep" == false ]]; then trap 'rm -rf "$out" "$synth_log"' EXIT; else trap 'rm -f "$synth_log"' EXIT; fi

cd "$infra_dir"
# Offline and quiet: no notices fetch, no CLI telemetry, no CDKMetadata; the app needs no credentials.
export CDK_DISABLE_CLI_TELEMETRY=true
synth() {  # synth <out dir> [extra cdk args...]
  local dir="$1"; shift
  if ! npx --no-install cdk synth --quiet --no-notices --no-version-reporting \
    -c lambdaAssetDir=test/placeholder-lambda -c region="$region" "$@" -o "$dir" >"$synth_log" 2>&1; then
    grep -v 'Unknown \(user\|env\) config "nodedir"' "$synth_log" >&2 || true
    echo "lint.sh: cdk synth $* failed" >&2
    exit 1
  fi
}
synth "$out"
# exportMode=stream changes only MeteringAnalyticsStack (the Firehose stream and its subscriptions): lint it too.
synth "$out/stream" -c exportMode=stream

templates=("$out"/*.template.json)
if [[ ${#templates[@]} -ne 2 ]]; then
  echo "lint.sh: expected 2 templates in $out, found ${#templates[@]}" >&2
  exit 1
fi
mkdir -p "$out/linted"
cp "$out/stream/MeteringAnalyticsStack.template.json" "$out/linted/MeteringAnalyticsStack-stream.template.json"
templates+=("$out/linted/MeteringAnalyticsStack-stream.template.json")
"$cfn_lint" --regions "$region" --ignore-checks W3005 -- "${templates[@]}"
echo "cfn-lint: clean (${templates[*]##*/})"
if [[ "$keep" == true ]]; then echo "cloud assembly kept in $out"; fi
