#!/usr/bin/env bash
# Lints the GitHub workflows with actionlint (installed by scripts/bootstrap.sh with `go install`, pinned there).
set -euo pipefail
cd "$(dirname "$0")/.."
actionlint=$(command -v actionlint || true)
if [ -z "$actionlint" ] && command -v go >/dev/null 2>&1; then
  candidate="$(go env GOBIN)"; candidate="${candidate:-$(go env GOPATH)/bin}/actionlint"
  [ -x "$candidate" ] && actionlint="$candidate"
fi
[ -n "$actionlint" ] || { echo "check-workflows: actionlint not found; run scripts/bootstrap.sh" >&2; exit 1; }
echo "check-workflows: $actionlint $("$actionlint" -version | head -n 1) on .github/workflows/"
"$actionlint" .github/workflows/*.yml
