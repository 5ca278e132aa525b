#!/usr/bin/env bash
# Builds the native module into the package root (superpacket.<platform>.node, native.cjs, native.d.cts).
# Usage: scripts/build-native.sh [--target TRIPLE] [napi build arguments...] (npm run build:native: --release)
#
# linux-gnu targets built on a linux x64 host use napi-rs's cross toolchain (gcc and a glibc 2.17 sysroot,
# `napi build --use-napi-cross`), so that the binary loads on glibc >= 2.17 and not only on the build
# machine's glibc; scripts/check-glibc.sh checks the result. The toolchains come from the npm packages pinned
# in scripts/cross-toolchain/ and are unpacked where napi-rs looks for them (~/.napi-rs/cross-toolchain/):
# napi-rs would otherwise `npm pack` a toolchain of its own version at build time, which the registry may
# not have (the x86_64 one is at 1.0.0 while @napi-rs/cross-toolchain is at 1.0.5).
set -euo pipefail
cd "$(dirname "$0")/.."

target=""
args=()
while [ $# -gt 0 ]; do
  case "$1" in
    --target) target="$2"; shift 2 ;;
    *) args+=("$1"); shift ;;
  esac
done
host_is_linux_x64_gnu=$(node -p 'process.platform === "linux" && process.arch === "x64" && !!process.report.getReport().header.glibcVersionRuntime')
if [ -z "$target" ] && [ "$host_is_linux_x64_gnu" = true ]; then target=x86_64-unknown-linux-gnu; fi

napi=(npx napi build --platform --manifest-path crates/superpacket-node/Cargo.toml --package-json-path package.json
      --output-dir . --js native.cjs --dts native.d.cts)
[ -z "$target" ] || napi+=(--target "$target")

if [ "$host_is_linux_x64_gnu" = true ] && [[ "$target" == *-linux-gnu ]]; then
  pinned="scripts/cross-toolchain/node_modules/@napi-rs/cross-toolchain-x64-target-${target%%-*}"
  version=$(node -p 'require("@napi-rs/cross-toolchain/package.json").version')
  dest="$HOME/.napi-rs/cross-toolchain/$version/$target"
  if [ ! -f "$dest/package.json" ]; then
    [ -d "$pinned" ] || npm ci --prefix scripts/cross-toolchain --no-audit --no-fund --loglevel=error
    echo "build-native: unpacking the $target toolchain into $dest"
    mkdir -p "$dest"
    tar -xJf "$pinned/$target.tar.xz" -C "$dest"
  fi
  napi+=(--use-napi-cross)
fi
exec "${napi[@]}" "${args[@]}"
