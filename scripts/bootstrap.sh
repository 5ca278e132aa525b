#!/usr/bin/env bash
# Installs everything superpacket's demo, tests and benchmarks need on a fresh Debian/Ubuntu machine,
# then the npm dependencies. Run as root (apt-get); safe to run again.
set -euo pipefail
cd "$(dirname "$0")/.."

need_apt=()
for tool in ip:iproute2 ethtool:ethtool iperf3:iperf3 tcpdump:tcpdump capsh:libcap2-bin setpriv:util-linux \
            wg:wireguard-tools perf:linux-perf; do
  command -v "${tool%%:*}" >/dev/null 2>&1 || need_apt+=("${tool#*:}")
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

echo "bootstrap: npm ci"
npm ci --no-audit --no-fund --loglevel=error
