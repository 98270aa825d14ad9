/**
 * Every UDP socket werift's ICE agents bind, by local port, so that a port of
 * `rtc.port_range_*` is really free when the port pool hands it out again. werift binds an
 * agent's socket in `UdpTransport.init`; on some paths (a negotiation abandoned half-way, an
 * agent replaced during renegotiation) the agent that owned it is dropped without closing it.
 * The fuzzer's signalling target left 185 such sockets open after 3,000 participants came and
 * went; those that had bound held their port for good (the pool then took it for another
 * process's and kept it out of rotation), and those whose bind failed stayed open unbound. Ports are leased to one peer connection at a time (port-pool.ts), so a
 * socket still bound on a port whose lease was given back belongs to nobody and is closed.
 * Lifecycle: `installUdpRegistry` once per process (idempotent; patches werift's exported
 * `UdpTransport` class and says so when its shape has changed); `closeStrayUdp` from the pool.
 */
import type { Socket } from 'node:dgram';
import { UdpTransport } from 'werift';
import type { Logger } from '../../common/logger.ts';

interface UdpTransportShape {
  socket: Socket;
  init(this: UdpTransportShape): Promise<void>;
}

/** local port → werift sockets bound on it and not closed yet. */
const byPort = new Map<number, Set<Socket>>();
let installed: boolean | undefined;

function track(socket: Socket): void {
  let port: number;
  try {
    port = socket.address().port;
  } catch {
    return; // closed before it was tracked
  }
  let set = byPort.get(port);
  if (!set) byPort.set(port, (set = new Set()));
  set.add(socket);
  socket.once('close', () => {
    set.delete(socket);
    if (set.size === 0 && byPort.get(port) === set) byPort.delete(port);
  });
}

/** Returns whether werift's ICE sockets are now tracked. */
export function installUdpRegistry(logger: Logger): boolean {
  if (installed !== undefined) return installed;
  const proto = UdpTransport.prototype as unknown as UdpTransportShape;
  const original = proto.init;
  if (typeof original !== 'function') {
    logger.error('werift is not the shape expected (UdpTransport.init): media ports of abandoned ICE agents may stay bound');
    return (installed = false);
  }
  proto.init = async function initTracked(this: UdpTransportShape) {
    try {
      await original.call(this);
    } catch (err) {
      // werift made the socket in its constructor and drops the transport when binding fails.
      try {
        this.socket.close();
      } catch {
        // never opened
      }
      throw err;
    }
    if (this.socket) track(this.socket);
  };
  return (installed = true);
}

/** Closes werift sockets still bound on ports of `range`; returns how many. */
export function closeStrayUdp(range: readonly [number, number]): number {
  let closed = 0;
  for (let port = range[0]; port <= range[1]; port++) {
    const set = byPort.get(port);
    if (!set) continue;
    byPort.delete(port);
    for (const socket of set) {
      try {
        socket.close();
        closed++;
      } catch {
        // already closed
      }
    }
  }
  return closed;
}

/** Sockets tracked now (for tests and metrics). */
export function trackedUdpSockets(): number {
  let n = 0;
  for (const set of byPort.values()) n += set.size;
  return n;
}
