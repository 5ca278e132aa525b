#!/usr/bin/env bash
# Installs what superpacket's tests and demo need on a fresh Debian or Ubuntu machine, then the npm
# dependencies; with --bench, also what only the benchmarks need. Run as root (apt-get); safe to run again.
# Usage: scripts/bootstrap.sh [--bench]
set -euo pipefail
cd "$(dirname "$0")/.."

bench=false
case "${1:-}" in
  --bench) bench=true ;;
  '') ;;
  *) echo "usage: scripts/bootstrap.sh [--bench]" >&2; exit 2 ;;
esac

# actionlint, which the test command runs on .github/workflows (go install, pinned).
readonly ACTIONLINT_VERSION=v1.7.12

# Test needs (the tests and the demo), as command:package. The package names are the same on Debian and
# Ubuntu. Go builds wireguard-go for the interop tests and actionlint.
test_needs=(ip:iproute2 ethtool:ethtool wg:wireguard-tools tcpdump:tcpdump capsh:libcap2-bin setpriv:util-linux
            readelf:binutils xz:xz-utils go:golang-go)

# Bench needs (npm run bench only): perf's package differs between the two.
. /etc/os-release
case " ${ID:-} ${ID_LIKE:-} " in
  *" ubuntu "*) perf_packages="linux-tools-common linux-tools-generic" ;;
  *) perf_packages="linux-perf" ;;
esac
bench_needs=(iperf3:iperf3 "perf:$perf_packages")

wanted=("${test_needs[@]}")
if $bench; then wanted+=("${bench_needs[@]}"); fi
need_apt=()
for tool in "${wanted[@]}"; do
  # shellcheck disable=SC2206 # a need may name several packages
  command -v "${tool%%:*}" >/dev/null 2>&1 || need_apt+=(${tool#*:})
done
if [ ${#need_apt[@]} -gt 0 ]; then
  if [ "$(id -u)" -ne 0 ]; then
    echo "bootstrap: missing ${need_apt[*]}; run this script as root (sudo) to install them" >&2
    exit 1
  fi
  echo "bootstrap: apt-get install ${need_apt[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need_apt[@]}" >/dev/null
fi

command -v cargo >/dev/null 2>&1 || { echo "bootstrap: Rust (cargo) is required: https://rustup.rs" >&2; exit 1; }
node -e 'const [a,b]=process.versions.node.split(".").map(Number); process.exit((a===20&&b>=19)||(a===22&&b>=12)||a>22?0:1)' \
  || { echo "bootstrap: Node ^20.19 || >=22.12 is required (found $(node --version))" >&2; exit 1; }

gobin="$(go env GOBIN)"; gobin="${gobin:-$(go env GOPATH)/bin}"
if [ "$("$gobin/actionlint" -version 2>/dev/null | head -n 1)" != "$ACTIONLINT_VERSION" ]; then
  echo "bootstrap: go install actionlint@$ACTIONLINT_VERSION"
  go install "github.com/rhysd/actionlint/cmd/actionlint@$ACTIONLINT_VERSION"
fi

# wireguard-go, the real WireGuard peer of the interop tests and the bench, pinned; where tools/lab/wireguard.ts
# looks for it.
wg_go_bin="bench/.work/bin/wireguard"
if [ ! -x "$wg_go_bin" ]; then
  echo "bootstrap: go install $(cat scripts/wireguard-go.version)"
  GOBIN="$PWD/bench/.work/bin" go install "$(cat scripts/wireguard-go.version)"
fi

echo "bootstrap: npm ci"
npm ci --no-audit --no-fund --loglevel=error
