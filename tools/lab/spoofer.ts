/**
 * A host that claims another host's address: a third namespace joined to the victim's namespace by its own
 * veth, holding the impersonated side's outer IPv4 address. Datagrams sent from it carry exactly the
 * impersonated address and port (no raw sockets needed), while the victim still routes its own traffic to
 * the real host. Addresses come only from the lab's 198.18.0.0/15.
 * @internal
 * @module
 */
import { execFileSync } from 'node:child_process'
import { run, type Lab, type Side } from './netns.js'

export class Spoofer {
  /** The spoofer's namespace, as a side of the lab (`lab.node(spoofer.side, ...)` runs a script in it). */
  readonly side: Side
  #alive = true
  readonly #onExit = () => this.destroy()

  /**
   * @param lab - the lab whose namespaces it joins
   * @param victim - the side that receives the spoofed datagrams
   * @param impersonated - the side whose outer IPv4 address the spoofer takes
   */
  constructor(lab: Lab, readonly victim: Side, readonly impersonated: Side) {
    const ns = `spc-${victim.ns.slice(4)}`
    this.side = { ns, veth: 'vs', outer4: impersonated.outer4, outer6: impersonated.outer6, inner4: '', inner6: '' }
    process.once('exit', this.#onExit)
    try {
      run('ip', ['netns', 'add', ns])
      lab.exec(this.side, 'ip', ['link', 'set', 'lo', 'up'])
      // vs (spoofer side) <-> vspoof (victim side); the victim's end has no address, so nothing routes to it.
      lab.exec(this.side, 'ip', ['link', 'add', 'vs', 'type', 'veth', 'peer', 'name', 'vspoof', 'netns', victim.ns])
      lab.exec(victim, 'ip', ['link', 'set', 'vspoof', 'up'])
      // The victim must accept a source it routes elsewhere (reverse-path filtering would drop it).
      for (const dev of ['all', 'default', 'vspoof']) lab.exec(victim, 'sysctl', ['-qw', `net.ipv4.conf.${dev}.rp_filter=0`])
      const mac = lab.exec(victim, 'cat', ['/sys/class/net/vspoof/address']).trim()
      lab.exec(this.side, 'ip', ['addr', 'add', `${impersonated.outer4}/32`, 'dev', 'vs'])
      lab.exec(this.side, 'ip', ['link', 'set', 'vs', 'up'])
      lab.exec(this.side, 'ip', ['route', 'add', `${victim.outer4}/32`, 'dev', 'vs'])
      lab.exec(this.side, 'ip', ['neigh', 'replace', victim.outer4, 'lladdr', mac, 'dev', 'vs', 'nud', 'permanent'])
    } catch (err) {
      this.destroy()
      throw err
    }
  }

  /** Removes the namespace (and so its veth pair). Safe to call twice. */
  destroy(): void {
    if (!this.#alive) return
    this.#alive = false
    process.off('exit', this.#onExit)
    try {
      execFileSync('ip', ['netns', 'del', this.side.ns], { stdio: 'ignore' })
    } catch {
      // Already gone.
    }
  }
}
