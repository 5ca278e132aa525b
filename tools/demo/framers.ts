/**
 * The framer an endpoint runs with, from its command line: plain, a fixed header, or WireGuard from a
 * `wg`-format config file.
 * @internal
 * @module
 */
import { readFileSync } from 'node:fs'
import { headerFramer, parseWireGuardConfig, plainFramer, wireguard, type NativeFramer, type WireGuardFramer } from 'superpacket'

/** What the endpoint needs to know of its framer. */
export interface FramerChoice {
  framer: NativeFramer
  /** The WireGuard framer, for its peers' stats. */
  wireguard?: WireGuardFramer
  /** The MTU the config file asks for, if any. */
  mtu?: number
}

/**
 * Builds the framer `name` names (`plain`, `header` or `wireguard`); WireGuard reads `wgConfig` (a
 * `wg setconf`/wg-quick file) and rekeys after `rekeyAfterPackets` sealed packets when given.
 */
export function chooseFramer(name: string, wgConfig?: string, rekeyAfterPackets?: number): FramerChoice {
  if (name === 'header') return { framer: headerFramer(Buffer.from('superpkt')) }
  if (name === 'plain') return { framer: plainFramer() }
  if (name !== 'wireguard') throw new Error(`unknown framer '${name}'`)
  if (wgConfig === undefined) throw new Error('--framer wireguard needs --wg-config <file>')
  const file = parseWireGuardConfig(readFileSync(wgConfig, 'utf8'))
  const wg = wireguard({ privateKey: file.privateKey, peers: file.peers, rekeyAfterPackets })
  return { framer: wg, wireguard: wg, ...(file.mtu === null ? {} : { mtu: file.mtu }) }
}
