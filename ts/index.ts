/**
 * superpacket: fast userspace packet I/O for Node.js.
 *
 * TUN devices with TSO/USO offloads, UDP sockets with GSO/GRO, byte-exact segmentation and coalescing,
 * a framing hook and a native two-way tunnel.
 * @module
 */
export { splitSuperpacket, coalescePackets } from './packet.js'
export type { CoalesceOptions } from './packet.js'
export { SuperpacketError } from './errors.js'
export type { SuperpacketErrorCode } from './errors.js'
