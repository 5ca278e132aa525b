/**
 * Captures with tcpdump and reads what it wrote (the UDP payloads of an Ethernet capture), for tests that
 * check bytes on the wire.
 * @internal
 * @module
 */
import type { ChildProcess } from 'node:child_process'
import { existsSync, statSync } from 'node:fs'
import { setTimeout as sleep } from 'node:timers/promises'
import type { Lab, Side } from './netns.js'

/** One captured UDP datagram. */
export interface CapturedDatagram {
  srcPort: number
  dstPort: number
  payload: Buffer
}

const PCAP_MAGIC_LE = 0xa1b2c3d4
const PCAP_MAGIC_NS_LE = 0xa1b23c4d
const LINKTYPE_ETHERNET = 1

/** The UDP datagrams (over IPv4 or IPv6, in Ethernet frames) of a classic little-endian pcap file. */
export function udpDatagrams(pcap: Buffer): CapturedDatagram[] {
  if (pcap.length < 24) throw new Error('not a pcap file: shorter than its header')
  const magic = pcap.readUInt32LE(0)
  if (magic !== PCAP_MAGIC_LE && magic !== PCAP_MAGIC_NS_LE) throw new Error(`not a little-endian pcap file (magic ${magic.toString(16)})`)
  if (pcap.readUInt32LE(20) !== LINKTYPE_ETHERNET) throw new Error('only Ethernet captures are read')
  const out: CapturedDatagram[] = []
  for (let at = 24; at + 16 <= pcap.length; ) {
    const caplen = pcap.readUInt32LE(at + 8)
    const frame = pcap.subarray(at + 16, at + 16 + caplen)
    at += 16 + caplen
    if (frame.length < 14) continue
    const ethertype = frame.readUInt16BE(12)
    let ip = frame.subarray(14)
    let udp: Buffer
    if (ethertype === 0x0800 && ip.length >= 20 && ip[9] === 17) {
      const total = ip.readUInt16BE(2)
      ip = ip.subarray(0, total)
      udp = ip.subarray((ip[0]! & 0x0f) * 4)
    } else if (ethertype === 0x86dd && ip.length >= 40 && ip[6] === 17) {
      udp = ip.subarray(40, 40 + ip.readUInt16BE(4))
    } else {
      continue
    }
    if (udp.length < 8) continue
    out.push({ srcPort: udp.readUInt16BE(0), dstPort: udp.readUInt16BE(2), payload: udp.subarray(8, udp.readUInt16BE(4)) })
  }
  return out
}

/**
 * Starts `tcpdump -w file` on `side`'s veth with `filter` (packets cut at `snaplen` bytes) and resolves once
 * it listens (it has written the file header; bounded wait). Stop it with `stop()` from netns.
 */
export async function startCapture(lab: Lab, side: Side, file: string, filter: string, snaplen = 2000): Promise<ChildProcess> {
  const capture = lab.spawn(side, 'tcpdump', ['-i', side.veth, '-U', '-n', '-s', String(snaplen), '-w', file, filter])
  for (let t = 0; !(existsSync(file) && statSync(file).size >= 24); t++) {
    if (t > 100 || capture.exitCode !== null) {
      capture.kill('SIGKILL')
      throw new Error(`tcpdump did not start (exit ${capture.exitCode}); it is a test dependency (scripts/bootstrap.sh)`)
    }
    await sleep(50)
  }
  return capture
}
