/**
 * The UDP ports of `rtc.port_range_start..end`, handed to peer connections one block at a time.
 *
 * werift opens one socket per ICE agent and finds its port by binding every port of the range
 * from the bottom until one is free: O(range) binds per peer connection, and two connections
 * gathering at once can both pick the same port (the second bind then fails with an unhandled
 * socket error and its connection gets no candidate). Here each peer connection is given its own
 * block (`icePortRange` of exactly `blockSize` ports: one per address werift gathers on, so 1 when
 * `rtc.node_ip` is set), taken when the connection first needs it (the subscriber's first offer,
 * the publisher's first offer) and given back when it has closed. Blocks are handed out
 * round-robin, so a port just freed is the last one reused (stray packets of an old session do
 * not land on a new one).
 *
 * The pool knows exactly how many ports this process holds; `createPortSource` wraps it for the
 * transport factory: joins are refused up front when none is left (`admit`), and every
 * exhaustion is counted (`matrixrtc_sfu_udp_port_exhausted_total`) and logged, at most once per
 * 10 s with the number of further ones.
 */
import { createSocket } from 'node:dgram';
import { randomInt } from 'node:crypto';
import { isIP } from 'node:net';
import { getHostAddresses } from 'werift';
import { iceSocketOf } from './peer-config.ts';
import { closeStrayUdp } from './udp-registry.ts';
import type { Clock } from '../../common/clock.ts';
import type { Logger } from '../../common/logger.ts';
import type { TransportMetrics } from '../metrics.ts';

/** At most one "no free UDP port" warning per this interval (the rest are counted in it). */
const EXHAUSTED_LOG_INTERVAL_MS = 10_000;
/** A block found bound by another process is left alone this long before it is tried again. */
const FOREIGN_HOLD_MS = 60_000;
/** Blocks tried per peer connection before giving up (others may be held by other processes). */
const MAX_PROBES = 32;

export interface PortLease {
  /** The `icePortRange` for one peer connection, [first, last]. */
  readonly range: [number, number];
  /** Gives the block back (idempotent); call once the connection's sockets are closed. */
  release(): void;
}

export class PortPool {
  readonly blockSize: number;
  /** Peer connections the range can hold at once. */
  readonly capacity: number;
  private readonly first: number;
  private readonly used: boolean[];
  private inUseCount = 0;
  private cursor: number;

  /** `start`: index of the first block handed out (the factory picks one at random). */
  constructor(range: [number, number], blockSize = 1, start = 0) {
    if (!Number.isInteger(blockSize) || blockSize < 1) throw new RangeError(`block size must be a positive integer, got ${blockSize}`);
    const size = range[1] - range[0] + 1;
    if (!(size >= 1)) throw new RangeError(`empty port range ${range[0]}..${range[1]}`);
    this.first = range[0];
    this.blockSize = blockSize;
    this.capacity = Math.floor(size / blockSize);
    this.used = Array.from({ length: this.capacity }, () => false);
    this.cursor = this.capacity > 0 ? start % this.capacity : 0;
  }

  /** Blocks currently leased (peer connections holding ports). */
  get inUse(): number {
    return this.inUseCount;
  }

  /** Ports currently leased. */
  get portsInUse(): number {
    return this.inUseCount * this.blockSize;
  }

  hasFree(): boolean {
    return this.inUseCount < this.capacity;
  }

  /** A free block, or undefined when every block is leased. */
  take(): PortLease | undefined {
    if (!this.hasFree()) return undefined;
    for (let i = 0; i < this.capacity; i++) {
      const block = (this.cursor + i) % this.capacity;
      if (this.used[block]) continue;
      this.used[block] = true;
      this.inUseCount++;
      this.cursor = (block + 1) % this.capacity;
      const start = this.first + block * this.blockSize;
      let released = false;
      return {
        range: [start, start + this.blockSize - 1],
        release: () => {
          if (released) return;
          released = true;
          this.used[block] = false;
          this.inUseCount--;
        },
      };
    }
    return undefined;
  }
}

/** Where a transport gets the UDP ports of its peer connections. */
export interface PortSource {
  /**
   * A port block whose ports no other process holds, or undefined (counted and logged) when
   * none is free.
   */
  take(role: 'publisher' | 'subscriber'): Promise<PortLease | undefined>;
  /** Whether a new participant can get a port now (false is counted and logged). */
  admit(): boolean;
}

export function createPortSource(deps: {
  range: [number, number];
  /** rtc.node_ip: werift gathers only on it when set, else on every host address. */
  nodeIp: string;
  logger: Logger;
  clock: Clock;
  metrics?: TransportMetrics;
}): PortSource {
  const blockSize = deps.nodeIp && isIP(deps.nodeIp) ? 1 : Math.max(1, getHostAddresses(true, true, {}).length);
  const pool = new PortPool(deps.range, blockSize, randomInt(0, 1 << 30));
  const socket = iceSocketOf(deps.nodeIp);
  let lastForeignWarnAt = Number.NEGATIVE_INFINITY;
  deps.metrics?.ports(() => ({ inUse: pool.portsInUse, capacity: pool.capacity * pool.blockSize }));
  let lastWarnAt = Number.NEGATIVE_INFINITY;
  let suppressed = 0;
  const exhausted = (what: string) => {
    deps.metrics?.portExhausted();
    const now = deps.clock.now();
    if (now - lastWarnAt < EXHAUSTED_LOG_INTERVAL_MS) {
      suppressed++;
      return;
    }
    deps.logger.warn(
      { what, portRange: deps.range, peerConnections: pool.capacity, inUse: pool.inUse, suppressedSinceLast: suppressed },
      'no free UDP port in rtc.port_range_start..end: joins are refused (503) until ports free up; ' +
        'size the range for two ports per participant',
    );
    lastWarnAt = now;
    suppressed = 0;
  };
  /** Whether every port of `range` can be bound now (another process may hold one). */
  const bindable = async (range: [number, number]): Promise<boolean> => {
    for (let port = range[0]; port <= range[1]; port++) {
      const probe = createSocket(socket.type);
      const ok = await new Promise<boolean>((resolve) => {
        probe.once('error', () => resolve(false));
        probe.bind({ port, ...(socket.address ? { address: socket.address } : {}) }, () => resolve(true));
      });
      await new Promise<void>((resolve) => {
        try {
          probe.close(() => resolve());
        } catch {
          resolve();
        }
      });
      if (!ok) return false;
    }
    return true;
  };
  return {
    async take(role) {
      for (let attempt = 0; attempt < MAX_PROBES; attempt++) {
        const lease = pool.take();
        if (!lease) break;
        // A werift socket still bound here belongs to nobody (the block was free): close it.
        const strays = closeStrayUdp(lease.range);
        if (strays > 0) deps.logger.debug({ ports: lease.range, sockets: strays }, 'closed UDP sockets a closed peer connection left bound');
        if (await bindable(lease.range)) {
          return {
            range: lease.range,
            release: () => {
              closeStrayUdp(lease.range);
              lease.release();
            },
          };
        }
        // Held by another process: out of rotation for a while, still counted as in use.
        deps.clock.setTimeout(() => lease.release(), FOREIGN_HOLD_MS);
        const now = deps.clock.now();
        if (now - lastForeignWarnAt >= EXHAUSTED_LOG_INTERVAL_MS) {
          lastForeignWarnAt = now;
          deps.logger.warn({ ports: lease.range }, 'a UDP port of rtc.port_range_start..end is bound by another process; skipping it');
        }
      }
      exhausted(`${role} connection`);
      return undefined;
    },
    admit() {
      if (pool.hasFree()) return true;
      exhausted('join');
      return false;
    },
  };
}
