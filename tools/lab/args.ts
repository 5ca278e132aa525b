/**
 * Command-line helpers of the lab scripts.
 * @internal
 * @module
 */

/** Parses `host:port` or `[v6]:port`. */
export function hostPort(s: string): { address: string; port: number } {
  const m = /^\[?([^\]]+?)\]?:(\d+)$/.exec(s)
  if (!m) throw new Error(`'${s}' is not address:port`)
  return { address: m[1]!, port: Number(m[2]) }
}
