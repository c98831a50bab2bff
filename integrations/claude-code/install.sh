#!/bin/sh
# Installs the gateway-usage plugin into Claude Code and sets its status line, in one command:
#
#   integrations/claude-code/install.sh [--replace-statusline]
#
# 1. `claude plugin marketplace add <this directory>` (the local marketplace bedrock-metering);
# 2. `claude plugin install gateway-usage@bedrock-metering` (user scope; /gateway-usage:usage);
# 3. `statusLine` in Claude Code's user settings ($CLAUDE_CONFIG_DIR or ~/.claude, settings.json) runs the
#    installed plugin's status line script. A status line of your own is kept unless --replace-statusline.
# Run it again after updating the repository (the installed copy is per plugin version).
#   CLAUDE_BIN   the claude executable (default: claude on PATH)
set -eu

replace=false
for arg in "$@"; do
  case "$arg" in
    --replace-statusline) replace=true ;;
    -h|--help) sed -n '2,13p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "install.sh: unknown argument: $arg (see --help)" >&2; exit 2 ;;
  esac
done

here=$(cd "$(dirname "$0")" && pwd)
claude=${CLAUDE_BIN:-claude}
command -v "$claude" >/dev/null 2>&1 || { echo "install.sh: '$claude' not found: install Claude Code first" >&2; exit 1; }

"$claude" plugin marketplace add "$here"
"$claude" plugin install gateway-usage@bedrock-metering

"$claude" plugin list --json | REPLACE="$replace" python3 -c '
import json, os, sys
from pathlib import Path

plugins = [p for p in json.load(sys.stdin) if p.get("id") == "gateway-usage@bedrock-metering" and p.get("installPath")]
if not plugins:
    sys.exit("install.sh: the installed plugin was not found in `claude plugin list --json`")
script = Path(plugins[0]["installPath"]) / "scripts" / "gateway_usage.py"
command = f"python3 \"{script}\" statusline"
settings_path = Path(os.environ.get("CLAUDE_CONFIG_DIR") or Path.home() / ".claude") / "settings.json"
settings = json.loads(settings_path.read_text()) if settings_path.exists() else {}
current = settings.get("statusLine")
ours = isinstance(current, dict) and "gateway_usage.py" in str(current.get("command", ""))
if current and not ours and os.environ["REPLACE"] != "true":
    print(f"Your own statusLine in {settings_path} is kept; to use the gateway one, set its command to:\n  {command}\n"
          "or run install.sh --replace-statusline")
    sys.exit(0)
settings["statusLine"] = {"type": "command", "command": command, "padding": 0}
settings_path.parent.mkdir(parents=True, exist_ok=True)
settings_path.write_text(json.dumps(settings, indent=2) + "\n")
print(f"statusLine set in {settings_path}: {command}")
'
echo "Done. In Claude Code: the status line shows your gateway usage; /gateway-usage:usage prints the last 7 days."
