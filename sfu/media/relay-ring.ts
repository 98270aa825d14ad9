/**
 * A single-producer / single-consumer ring of packets in a SharedArrayBuffer, for relaying one
 * publisher track's RTP from the media worker that receives it to one other worker whose
 * subscribers forward it (docs/media-workers.md). One copy into shared memory per destination
 * worker, whatever the number of subscribers there. The ring is bounded: a packet that does not
 * fit is dropped and counted, so a slow consumer never stalls the producer. Each record carries
 * a small header: track id, length and the producer's receive stamp.
 *
 * Record layout (8-byte aligned): u32 payload length, u32 track id, f64 stamp, payload. A record
 * that would cross the end of the data region is preceded by a wrap marker and written at its
 * start. Head and tail are free-running byte counters (unsigned 32-bit, wrapping), so `head -
 * tail` is the bytes in use; the producer alone moves head, the consumer alone moves tail.
 *
 * Waking the consumer: it drains, then `armWake()`; from then on the producer's next `write`
 * disarms it and wakes it once, with `Atomics.notify` (the consumer awaits `waitAsync()`) or with
 * the writer's `onWake` callback (for a MessagePort doorbell). A ring that stays non-empty costs
 * no wake-up at all.
 *
 * Lifecycle: `createRelayRing(bytes)` makes the buffer, which is posted to both threads; the
 * producer's thread makes exactly one `RelayRingWriter` on it, the consumer's thread exactly one
 * `RelayRingReader`. Either side may `close()`: writes then return false (not counted as drops),
 * the reader is woken and still drains what was written before. No timers, no allocation per
 * packet on the producer side; no werift.
 */

const WRAP = 0xffffffff;
const RECORD_HEADER = 16;
/** Int32 indices of the control words; head and tail sit on different cache lines. */
const HEAD = 0;
const DROPS = 1;
const WRITTEN = 2;
const TAIL = 16;
const SLEEP = 17;
const CLOSED = 32;
const CONTROL_BYTES = 192;

/** ES2024's `Atomics.waitAsync` (Node ≥ 16), typed here because the project's lib is es2023. */
type WaitAsyncResult = { async: false; value: 'not-equal' | 'timed-out' } | { async: true; value: Promise<'ok' | 'timed-out'> };
const atomicsWaitAsync = (Atomics as unknown as { waitAsync: (a: Int32Array, i: number, v: number, t?: number) => WaitAsyncResult }).waitAsync;

const recordBytes = (payload: number) => (RECORD_HEADER + payload + 7) & ~7;

/** Thrown for a packet the ring can never hold, whatever its state. */
export class PacketTooLargeError extends RangeError {
  constructor(bytes: number, maxBytes: number, capacity: number) {
    super(`relay ring: a ${bytes}-byte packet does not fit a ring of ${capacity} bytes (at most ${maxBytes} bytes per packet)`);
    this.name = 'PacketTooLargeError';
  }
}

/** A ring whose data region holds `capacityBytes` (a power of two, at least 256). */
export function createRelayRing(capacityBytes: number): SharedArrayBuffer {
  if (!Number.isInteger(capacityBytes) || capacityBytes < 256 || capacityBytes > 2 ** 30 || (capacityBytes & (capacityBytes - 1)) !== 0) {
    throw new RangeError(`relay ring: capacity must be a power of two between 256 and 2^30 bytes, got ${capacityBytes}`);
  }
  return new SharedArrayBuffer(CONTROL_BYTES + capacityBytes);
}

class RingView {
  protected readonly ctl: Int32Array;
  protected readonly u32: Uint32Array;
  protected readonly f64: Float64Array;
  protected readonly bytes: Uint8Array;
  readonly capacity: number;
  protected readonly mask: number;
  /**
   * Largest payload accepted: a record of at most half the ring always fits an empty ring
   * (either before the end of the data region or, after a wrap marker, at its start).
   */
  readonly maxPacketBytes: number;

  constructor(sab: SharedArrayBuffer) {
    const capacity = sab.byteLength - CONTROL_BYTES;
    if (capacity < 256 || (capacity & (capacity - 1)) !== 0) throw new RangeError('relay ring: not a buffer made by createRelayRing');
    this.capacity = capacity;
    this.mask = capacity - 1;
    this.ctl = new Int32Array(sab, 0, CONTROL_BYTES / 4);
    this.u32 = new Uint32Array(sab, CONTROL_BYTES, capacity / 4);
    this.f64 = new Float64Array(sab, CONTROL_BYTES, capacity / 8);
    this.bytes = new Uint8Array(sab, CONTROL_BYTES, capacity);
    this.maxPacketBytes = capacity / 2 - RECORD_HEADER;
  }

  /** Packets dropped because the ring was full. */
  get drops(): number {
    return Atomics.load(this.ctl, DROPS) >>> 0;
  }

  /** Packets written so far. */
  get written(): number {
    return Atomics.load(this.ctl, WRITTEN) >>> 0;
  }

  /** Bytes in use now (records, padding and wrap markers). */
  get usedBytes(): number {
    return (Atomics.load(this.ctl, HEAD) - Atomics.load(this.ctl, TAIL)) >>> 0;
  }

  get closed(): boolean {
    return Atomics.load(this.ctl, CLOSED) === 1;
  }

  close(): void {
    Atomics.store(this.ctl, CLOSED, 1);
    if (Atomics.compareExchange(this.ctl, SLEEP, 1, 0) === 1) Atomics.notify(this.ctl, SLEEP);
  }
}

export interface RelayRingWriterOptions {
  /**
   * Called instead of `Atomics.notify` when a write finds the consumer asleep (a doorbell: post
   * one small message to the consumer's port). At most once per `armWake` of the reader.
   */
  onWake?: () => void;
}

/** The producer side; one per ring, used from one thread. */
export class RelayRingWriter extends RingView {
  private head: number;
  private dropCount: number;
  private writeCount: number;
  private readonly onWake: (() => void) | undefined;

  constructor(sab: SharedArrayBuffer, opts: RelayRingWriterOptions = {}) {
    super(sab);
    this.head = Atomics.load(this.ctl, HEAD) >>> 0;
    this.dropCount = Atomics.load(this.ctl, DROPS) >>> 0;
    this.writeCount = Atomics.load(this.ctl, WRITTEN) >>> 0;
    this.onWake = opts.onWake;
  }

  /**
   * Copies one packet in; false when the ring is full (the packet is dropped and counted) or
   * closed. Throws `PacketTooLargeError` for a packet above `maxPacketBytes`.
   */
  write(trackId: number, stamp: number, payload: Uint8Array): boolean {
    const len = payload.length;
    if (len > this.maxPacketBytes) throw new PacketTooLargeError(len, this.maxPacketBytes, this.capacity);
    const ctl = this.ctl;
    if (Atomics.load(ctl, CLOSED) === 1) return false;
    const rec = recordBytes(len);
    const head = this.head;
    const off = head & this.mask;
    const toEnd = this.capacity - off;
    const need = rec <= toEnd ? rec : rec + toEnd;
    const used = (head - Atomics.load(ctl, TAIL)) >>> 0;
    if (need > this.capacity - used) {
      this.dropCount = (this.dropCount + 1) >>> 0;
      Atomics.store(ctl, DROPS, this.dropCount | 0);
      return false;
    }
    let at = off;
    if (rec > toEnd) {
      this.u32[off >> 2] = WRAP;
      at = 0;
    }
    const w = at >> 2;
    this.u32[w] = len;
    this.u32[w + 1] = trackId;
    this.f64[(at >> 3) + 1] = stamp;
    this.bytes.set(payload, at + RECORD_HEADER);
    this.head = (head + need) >>> 0;
    this.writeCount = (this.writeCount + 1) >>> 0;
    // The head store publishes the record (sequentially consistent: the plain writes above are
    // visible to a reader that loads this head).
    Atomics.store(ctl, HEAD, this.head | 0);
    Atomics.store(ctl, WRITTEN, this.writeCount | 0);
    if (Atomics.load(ctl, SLEEP) === 1 && Atomics.compareExchange(ctl, SLEEP, 1, 0) === 1) {
      if (this.onWake) this.onWake();
      else Atomics.notify(ctl, SLEEP);
    }
    return true;
  }
}

/** Called for each packet read; `payload` views shared memory and is valid only during the call. */
export type RelayPacketHandler = (trackId: number, stamp: number, payload: Uint8Array) => void;

/** The consumer side; one per ring, used from one thread. */
export class RelayRingReader extends RingView {
  private tail: number;

  constructor(sab: SharedArrayBuffer) {
    super(sab);
    this.tail = Atomics.load(this.ctl, TAIL) >>> 0;
  }

  /**
   * Hands up to `max` packets to `onPacket`, oldest first, and frees their space; returns how
   * many. A handler that throws stops the drain after freeing the packet it was given.
   */
  drain(onPacket: RelayPacketHandler, max = Number.POSITIVE_INFINITY): number {
    const ctl = this.ctl;
    const head = Atomics.load(ctl, HEAD) >>> 0;
    let tail = this.tail;
    let n = 0;
    try {
      while (tail !== head && n < max) {
        const off = tail & this.mask;
        const len = this.u32[off >> 2]!;
        if (len === WRAP) {
          tail = (tail + this.capacity - off) >>> 0;
          continue;
        }
        const trackId = this.u32[(off >> 2) + 1]!;
        const stamp = this.f64[(off >> 3) + 1]!;
        const start = off + RECORD_HEADER;
        tail = (tail + recordBytes(len)) >>> 0;
        n++;
        onPacket(trackId, stamp, this.bytes.subarray(start, start + len));
      }
    } finally {
      this.tail = tail;
      Atomics.store(ctl, TAIL, tail | 0);
    }
    return n;
  }

  /** True when a packet is waiting. */
  get hasData(): boolean {
    return (Atomics.load(this.ctl, HEAD) >>> 0) !== this.tail;
  }

  /**
   * Asks to be woken by the producer's next write. False when there is data already (or the
   * ring is closed): drain again instead of waiting.
   */
  armWake(): boolean {
    const ctl = this.ctl;
    Atomics.store(ctl, SLEEP, 1);
    if ((Atomics.load(ctl, HEAD) >>> 0) !== this.tail || Atomics.load(ctl, CLOSED) === 1) {
      Atomics.compareExchange(ctl, SLEEP, 1, 0);
      return false;
    }
    return true;
  }

  /**
   * After `armWake()` returned true: resolves when the producer writes (or either side closes),
   * or after `timeoutMs`. Does not block the thread (`Atomics.waitAsync`), and, in Node, does not
   * keep its event loop alive either: a thread with nothing else open (a socket, a port with a
   * listener) exits while it waits.
   */
  waitAsync(timeoutMs = Number.POSITIVE_INFINITY): Promise<void> {
    const r = atomicsWaitAsync(this.ctl, SLEEP, 1, timeoutMs);
    return r.async ? r.value.then(() => undefined) : Promise.resolve();
  }
}
