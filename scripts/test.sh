#!/usr/bin/env bash
# The test command: builds the package, runs cargo test, vitest (with the packaging test), the typedoc build,
# the glibc baseline check of the binary and actionlint on the workflows, and ends with one line
# "N passed, N failed, N skipped" summed over them. Exits non-zero if anything failed.
set -uo pipefail
cd "$(dirname "$0")/.."
logs=$(mktemp -d)
trap 'rm -rf "$logs"' EXIT

npm run build || { echo "0 passed, 1 failed"; exit 1; }

cargo test --workspace 2>&1 | tee "$logs/cargo.txt"
cargo_rc=${PIPESTATUS[0]}

npx vitest run --reporter=default --reporter=json --outputFile.json="$logs/vitest.json"
vitest_rc=$?

# Checks that count one each, by exit code: the API reference builds without a warning (typedoc treats
# warnings as errors); a linux-gnu binary needs no glibc above the baseline; the workflows pass actionlint.
checks=()
npm run docs; checks+=($?)
if compgen -G 'superpacket.linux-*-gnu.node' >/dev/null; then bash scripts/check-glibc.sh; checks+=($?); fi
bash scripts/check-workflows.sh; checks+=($?)

node - "$logs/cargo.txt" "$logs/vitest.json" "$cargo_rc" "$vitest_rc" "${checks[@]}" <<'JS'
const fs = require('node:fs')
const [cargoLog, vitestJson, cargoRc, vitestRc, ...checkRcs] = process.argv.slice(2)
let passed = 0, failed = 0, skipped = 0
for (const rc of checkRcs) {
  if (rc === '0') passed += 1
  else failed += 1
}
for (const m of fs.readFileSync(cargoLog, 'utf8').matchAll(/test result: \w+\. (\d+) passed; (\d+) failed; (\d+) ignored/g)) {
  passed += +m[1]; failed += +m[2]; skipped += +m[3]
}
try {
  const v = JSON.parse(fs.readFileSync(vitestJson, 'utf8'))
  passed += v.numPassedTests; failed += v.numFailedTests; skipped += v.numPendingTests + (v.numTodoTests ?? 0)
  // A file that fails to load has no tests but failed all the same.
  failed += v.testResults.filter((f) => f.status === 'failed' && f.assertionResults.length === 0).length
} catch (e) {
  console.error(`could not read vitest results: ${e.message}`)
  failed += 1
}
// A runner that exited non-zero without a counted failure (a build error, a crash) still fails the run.
if (cargoRc !== '0' && failed === 0) failed += 1
if (vitestRc !== '0' && failed === 0) failed += 1
console.log(`${passed} passed, ${failed} failed, ${skipped} skipped`)
process.exit(failed > 0 ? 1 : 0)
JS
