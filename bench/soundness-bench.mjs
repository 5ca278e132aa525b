// Before/after figures for the buffer-soundness change on the JS path (issue 11, item 2).
// Usage, as root: node soundness-bench.mjs <package dir> [seconds per case]
// Runs itself again inside a fresh network namespace (loopback + one TUN, 198.18.0.0/15 only) and prints
// one JSON line per case: a UDP GRO receive loop (reuseBuffers on/off), a TUN read loop fed by a UDP GSO
// sender through the TUN (reuseBuffers on/off), and PacketWriter.write of one batch into the TUN.
import { execFileSync, spawnSync } from 'node:child_process'
import { randomBytes } from 'node:crypto'
import { pathToFileURL } from 'node:url'

const [pkgDir, secsArg] = process.argv.slice(2)
const SECS = Number(secsArg ?? 3)

if (process.env.SP_BENCH_INNER !== '1') {
  const ns = `sp-sbench-${process.pid}-${randomBytes(2).toString('hex')}`
  execFileSync('ip', ['netns', 'add', ns])
  try {
    execFileSync('ip', ['-n', ns, 'link', 'set', 'lo', 'up'])
    const r = spawnSync('ip', ['netns', 'exec', ns, process.execPath, process.argv[1], pkgDir, String(SECS)], {
      stdio: 'inherit',
      env: { ...process.env, SP_BENCH_INNER: '1' },
      timeout: 120_000,
    })
    process.exitCode = r.status ?? 1
  } finally {
    execFileSync('ip', ['netns', 'del', ns])
  }
} else {
  const sp = await import(pathToFileURL(`${pkgDir}/dist/index.js`).href)
  const SEG = 1400
  const BURST = 44

  const tick = () => new Promise((r) => setImmediate(r))

  // A send that the socket takes at once settles without reaching the event loop: yield to it regularly so
  // that the receiver and the timers run.
  async function sendLoop(send, stopped) {
    for (let i = 0; !stopped(); i++) {
      await send()
      if (i % 4 === 3) await tick()
    }
  }

  async function udpReceive(reuse) {
    const rx = await sp.UdpSocket.bind({ address: '127.0.0.1', reuseBuffers: reuse })
    const tx = await sp.UdpSocket.bind({ address: '127.0.0.1' })
    const data = Buffer.alloc(SEG * BURST, 7)
    let stop = false
    const sender = sendLoop(() => tx.sendSegments(rx.address, data, SEG), () => stop)
    let bytes = 0
    let batches = 0
    const ac = new AbortController()
    const t0 = performance.now()
    setTimeout(() => ac.abort(), SECS * 1000)
    try {
      for await (const b of rx.batches({ signal: ac.signal })) {
        bytes += b.buffer.length
        batches++
      }
    } catch (e) {
      if (e?.name !== 'AbortError' && e?.code !== 'ERR_SUPERPACKET_ABORTED') throw e
    }
    const s = (performance.now() - t0) / 1000
    stop = true
    await sender
    await rx.close()
    await tx.close()
    return { case: `udp receive loop, reuseBuffers ${reuse}`, gbitPerS: +((bytes * 8) / s / 1e9).toFixed(3), batches }
  }

  function udp4(src, dst, sport, dport, payload, id) {
    const ip = Buffer.alloc(28 + payload.length)
    ip[0] = 0x45
    ip.writeUInt16BE(ip.length, 2)
    ip.writeUInt16BE(id, 4)
    ip[8] = 64
    ip[9] = 17
    ip.set(src, 12)
    ip.set(dst, 16)
    let sum = 0
    for (let i = 0; i < 20; i += 2) sum += ip.readUInt16BE(i)
    while (sum > 0xffff) sum = (sum & 0xffff) + (sum >>> 16)
    ip.writeUInt16BE(~sum & 0xffff, 10)
    ip.writeUInt16BE(sport, 20)
    ip.writeUInt16BE(dport, 22)
    ip.writeUInt16BE(8 + payload.length, 24)
    payload.copy(ip, 28)
    return ip
  }

  async function tunRead(reuse) {
    const tun = await sp.Tun.open({ name: 'spb0', mtu: 1500, ipv4: '198.18.0.1/24', reuseBuffers: reuse })
    const tx = await sp.UdpSocket.bind({ address: '198.18.0.1' })
    const data = Buffer.alloc(SEG * BURST, 9)
    let stop = false
    const sender = sendLoop(() => tx.sendSegments({ address: '198.18.0.2', port: 9 }, data, SEG), () => stop)
    let bytes = 0
    let reads = 0
    const ac = new AbortController()
    const t0 = performance.now()
    setTimeout(() => ac.abort(), SECS * 1000)
    try {
      for (;;) {
        const sps = await tun.read({ signal: ac.signal })
        reads++
        for (const p of sps) bytes += p.frame.length
      }
    } catch (e) {
      if (e?.name !== 'AbortError' && e?.code !== 'ERR_SUPERPACKET_ABORTED') throw e
    }
    const s = (performance.now() - t0) / 1000
    stop = true
    await sender
    await tx.close()
    await tun.close()
    return { case: `tun read loop, reuseBuffers ${reuse}`, gbitPerS: +((bytes * 8) / s / 1e9).toFixed(3), reads }
  }

  async function packetWriter() {
    const tun = await sp.Tun.open({ name: 'spb1', mtu: 1500, ipv4: '198.18.1.1/24' })
    // 64 datagrams as a plain framer sees them: UDP/IPv4 packets of one flow to an address behind the TUN.
    const pkts = Array.from({ length: 64 }, (_, i) => udp4([198, 18, 1, 2], [198, 18, 1, 3], 40000, 9, Buffer.alloc(SEG - 28, i), i + 1))
    const rx = await sp.UdpSocket.bind({ address: '127.0.0.1', reuseBuffers: true })
    const tx = await sp.UdpSocket.bind({ address: '127.0.0.1' })
    await tx.sendSegments(rx.address, Buffer.concat(pkts), SEG)
    let batch = await rx.receive()
    while (batch.count < 64) {
      const more = await rx.receive()
      batch = { buffer: Buffer.concat([batch.buffer, more.buffer]), lengths: Uint32Array.from([...batch.lengths, ...more.lengths]) }
    }
    const w = tun.packetWriter()
    let writes = 0
    const t0 = performance.now()
    while (performance.now() - t0 < SECS * 1000) {
      await w.write(batch)
      if (++writes % 32 === 0) await tick()
    }
    const s = (performance.now() - t0) / 1000
    await rx.close()
    await tx.close()
    await tun.close()
    return { case: 'PacketWriter.write of 64 x 1400 B', gbitPerS: +((writes * 64 * SEG * 8) / s / 1e9).toFixed(3), writes }
  }

  // CPU seconds of this process per GB moved: less sensitive than throughput to other load on the machine.
  async function measured(run) {
    const c0 = process.cpuUsage()
    const r = await run()
    const c = process.cpuUsage(c0)
    const gb = (r.gbitPerS * SECS) / 8
    return { ...r, cpuSecPerGB: +((c.user + c.system) / 1e6 / gb).toFixed(3) }
  }
  for (const r of [true, false]) console.log(JSON.stringify(await measured(() => udpReceive(r))))
  for (const r of [true, false]) console.log(JSON.stringify(await measured(() => tunRead(r))))
  console.log(JSON.stringify(await measured(packetWriter)))
}
