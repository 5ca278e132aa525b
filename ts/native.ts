/**
 * Loads the platform's native module (built by napi-rs into `native.cjs` and `superpacket.<triple>.node`).
 * @internal
 * @module
 */
import { createRequire } from 'node:module'

const require = createRequire(import.meta.url)

/** The native binding, typed by the `native.d.cts` that napi-rs generates. */
export const binding: typeof import('../native.cjs') = require('../native.cjs')
