#!/usr/bin/env bash
# The test command: builds the package, runs cargo test, vitest and the typedoc build, and ends with one
# line "N passed, N failed, N skipped" summed over them. Exits non-zero if anything failed.
set -uo pipefail
cd "$(dirname "$0")/.."
logs=$(mktemp -d)
trap 'rm -rf "$logs"' EXIT

npm run build || { echo "0 passed, 1 failed"; exit 1; }

cargo test --workspace 2>&1 | tee "$logs/cargo.txt"
cargo_rc=${PIPESTATUS[0]}

npx vitest run --reporter=default --reporter=json --outputFile.json="$logs/vitest.json"
vitest_rc=$?

# The API reference must build without a warning (typedoc treats warnings as errors): one more check.
npm run docs
docs_rc=$?

node - "$logs/cargo.txt" "$logs/vitest.json" "$cargo_rc" "$vitest_rc" "$docs_rc" <<'JS'
const fs = require('node:fs')
const [cargoLog, vitestJson, cargoRc, vitestRc, docsRc] = process.argv.slice(2)
let passed = 0, failed = 0, skipped = 0
if (docsRc === '0') passed += 1
else failed += 1
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
