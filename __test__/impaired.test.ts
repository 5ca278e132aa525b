import { afterEach, describe, expect, it } from 'vitest'
import { TunnelPair, type PairOptions, type RelayCounters, type RelayOptions } from '../tools/dist/lab/tunnel-pair.js'
import { privileged } from './helpers/privileged.js'

const MiB = 1 << 20
/** The impaired network: 1 % loss, 5 % reordering, 1 % duplication, in both directions. */
const IMPAIRED: RelayOptions = { loss: 0.01, reorder: 0.05, duplicate: 0.01, seed: 20261128 }

let pair: TunnelPair | undefined
afterEach(async () => {
  await pair?.close()
  pair = undefined
})

/** Whether `count` of `n` decisions at rate `p` is within 5 standard deviations of n·p (binomial). */
function plausible(count: number, n: number, p: number): boolean {
  return Math.abs(count - n * p) <= 5 * Math.sqrt(n * p * (1 - p)) + 1
}

/** The relay did to this direction what it was asked to, and accounted for every datagram. */
function checkImpaired(c: RelayCounters, relay: RelayOptions): void {
  expect(c.received).toBeGreaterThan(2_000)
  // Every datagram is forwarded, dropped, or (never expected here) lost to a full queue; copies add one each.
  expect(c.forwarded + c.overflow).toBe(c.received - c.dropped + c.duplicated)
  expect(c.strangers).toBe(0)
  expect(c.dropped).toBeGreaterThan(0)
  expect(c.duplicated).toBeGreaterThan(0)
  expect(c.reordered).toBeGreaterThan(0)
  expect(plausible(c.dropped, c.received, relay.loss!)).toBe(true)
  expect(plausible(c.duplicated, c.received - c.dropped, relay.duplicate!)).toBe(true)
  expect(plausible(c.reordered, c.received - c.dropped + c.duplicated, relay.reorder!)).toBe(true)
}

if (privileged('impaired network')) {
  describe('an impaired path (a relay that drops, reorders and duplicates datagrams)', () => {
    it.each([
      ['native Tunnel', { mode: 'native' }, IMPAIRED, 256 * MiB],
      ['JS path', { mode: 'js' }, IMPAIRED, 256 * MiB],
      // A delay stretches the round trip (and so TCP's recovery from each loss): a smaller transfer.
      ['native Tunnel, 2 ms added each way', { mode: 'native' }, { ...IMPAIRED, delayMs: 2 }, 32 * MiB],
    ] as [string, PairOptions, RelayOptions, number][])('TCP arrives intact through loss 0.01, reordering 0.05, duplication 0.01: %s', async (name, options, relayOptions, bytes) => {
      pair = await TunnelPair.start('impair', { ...options, offload: 'auto', framer: 'header', relay: relayOptions })
      const t = await pair.transfer(bytes, 4, 600)
      expect(t.bytes).toBe(bytes)
      expect(t.sha256Received).toBe(t.sha256Sent)
      // The transfer's last segments (the close, its ACKs) may still sit in a delay line when it reports:
      // read the relay's counters once its queues are empty (bounded wait), so they add up.
      let relay = await pair.relayStats()
      for (let i = 0; relay.queued > 0 && i < 40; i++) {
        await new Promise((r) => setTimeout(r, 50))
        relay = await pair.relayStats()
      }
      console.log(`impaired, ${name}: ${bytes / MiB} MiB in ${t.seconds.toFixed(1)} s, ${(t.gbps * 1000).toFixed(0)} Mbit/s; relay ${JSON.stringify(relay)}`)
      expect(relay.queued).toBe(0)
      for (const c of [relay.leftToRight, relay.rightToLeft]) {
        checkImpaired(c, relayOptions)
        // Without a delay nothing waits in the delay line; with one, everything not reordered does.
        if (relayOptions.delayMs) expect(c.delayed).toBe(c.received - c.dropped + c.duplicated - c.reordered - c.overflow)
        else expect(c.delayed).toBe(0)
      }
    })
  })
}
