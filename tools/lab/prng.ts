/**
 * A small seeded pseudo-random generator (mulberry32) for the lab's traffic tools, so that a flood or an
 * impairment run can be repeated decision for decision. Not for anything that needs real randomness.
 * @internal
 * @module
 */

/** Returns a function that yields numbers in [0, 1), the same sequence for the same seed. */
export function seededRandom(seed: number): () => number {
  let s = seed >>> 0
  return () => {
    s = (s + 0x6d2b79f5) >>> 0
    let t = s
    t = Math.imul(t ^ (t >>> 15), t | 1)
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61)
    return ((t ^ (t >>> 14)) >>> 0) / 2 ** 32
  }
}
