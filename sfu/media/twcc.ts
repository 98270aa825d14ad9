/**
 * Transport-wide congestion control feedback (draft-holmer-rmcat-transport-wide-cc-extensions-01)
 * for one publisher PC: records when each packet carrying a transport-wide sequence number
 * arrived, whatever m-line or simulcast layer it came on, and builds the RTCP feedback that
 * Chrome's send-side bandwidth estimator needs before it ramps its encoder up.
 *
 * Why not werift's ReceiverTWCC: it keeps one instance per receiver, so in a bundled session each
 * m-line reports a sparse subset of the shared sequence space, and the gaps (packets of the other
 * m-lines, or real losses) are counted into the previous status run without deltas, which makes
 * the feedback malformed; its reference time is also truncated to 64 ms without correcting the
 * first delta, and it never reports losses. The transport switches werift's copy off
 * (`twccEnabled`) and feeds this one instead.
 *
 * Pure apart from its inputs: arrival times are handed in (microseconds, any monotonic origin);
 * `onPacket` says when a feedback is due (every `intervalUs`, or when many packets wait), and
 * `build()` returns the RTCP packet bytes. Lifecycle: one per publisher PC, dropped with it.
 */

/** RTPFB (205), FMT 15. */
const RTPFB = 205;
const TWCC_FMT = 15;
const TICK_US = 250;
const REFERENCE_US = 64_000;
/** Packets after which a feedback is sent even before the interval passed. */
const MAX_PENDING = 120;
/** A gap this large (reordering or a restart) is not reported; the window moves on. */
const MAX_SPAN = 4000;

const STATUS_NOT_RECEIVED = 0;
const STATUS_SMALL = 1;
const STATUS_LARGE = 2;

export interface TwccFeedbackOptions {
  /** SSRC written as the feedback's sender (the receiver's RTCP SSRC). */
  senderSsrc: number;
  /** How often feedback is due while packets arrive (default 50 ms). */
  intervalUs?: number;
}

/** Reads the 16-bit transport-wide sequence number from a header extension payload. */
export function transportSequenceNumber(payload: Buffer): number | undefined {
  return payload.length >= 2 ? payload.readUInt16BE(0) : undefined;
}

export class TwccFeedback {
  private readonly senderSsrc: number;
  private readonly intervalUs: number;
  /** Unwrapped sequence number → arrival in 250 µs ticks. */
  private readonly arrivals = new Map<number, number>();
  private highest = -1;
  /** First unwrapped sequence number not reported yet. */
  private windowStart = -1;
  private mediaSsrc = 0;
  private fbCount = 0;
  private lastBuiltUs = -1;

  constructor(opts: TwccFeedbackOptions) {
    this.senderSsrc = opts.senderSsrc >>> 0;
    this.intervalUs = opts.intervalUs ?? 50_000;
  }

  /** Packets waiting to be reported. */
  get pending(): number {
    return this.arrivals.size;
  }

  /** Records a packet; returns true when a feedback is due (call `build()`). */
  onPacket(sequenceNumber: number, arrivalUs: number, mediaSsrc: number): boolean {
    let seq: number;
    if (this.highest < 0) {
      seq = sequenceNumber & 0xffff;
      this.highest = seq;
      this.windowStart = seq;
    } else {
      const diff = ((((sequenceNumber - this.highest) & 0xffff) + 0x8000) & 0xffff) - 0x8000;
      seq = this.highest + diff;
      if (seq > this.highest) this.highest = seq;
    }
    this.mediaSsrc = mediaSsrc >>> 0;
    if (seq < this.windowStart) return false; // already reported as lost; too late
    if (this.highest - this.windowStart > MAX_SPAN) {
      for (const key of this.arrivals.keys()) if (key < this.highest - MAX_SPAN) this.arrivals.delete(key);
      this.windowStart = this.highest - MAX_SPAN;
      if (seq < this.windowStart) return false;
    }
    if (!this.arrivals.has(seq)) this.arrivals.set(seq, Math.round(arrivalUs / TICK_US));
    if (this.lastBuiltUs < 0) this.lastBuiltUs = arrivalUs;
    return this.arrivals.size >= MAX_PENDING || arrivalUs - this.lastBuiltUs >= this.intervalUs;
  }

  /**
   * The RTCP feedback for every packet since the last one (received with their arrival deltas,
   * missing ones as not received), or undefined when nothing waits. `nowUs` restarts the interval.
   */
  build(nowUs: number): Buffer | undefined {
    this.lastBuiltUs = nowUs;
    if (this.arrivals.size === 0) return undefined;
    const base = this.windowStart;
    // Advance to the first received packet: a feedback starts with a received one.
    let first = base;
    while (!this.arrivals.has(first) && first <= this.highest) first++;
    if (first > this.highest) return undefined;
    const firstTicks = this.arrivals.get(first)!;
    const referenceUnits = Math.floor((firstTicks * TICK_US) / REFERENCE_US);
    let prevTicks = (referenceUnits * REFERENCE_US) / TICK_US;

    const statuses: number[] = [];
    const deltas: number[] = [];
    let last = base - 1;
    for (let seq = base; seq <= this.highest && statuses.length < 0xffff; seq++) {
      const ticks = this.arrivals.get(seq);
      if (ticks === undefined) {
        statuses.push(STATUS_NOT_RECEIVED);
        continue;
      }
      const delta = ticks - prevTicks;
      if (delta < -32768 || delta > 32767) break; // next feedback starts here
      statuses.push(delta >= 0 && delta <= 255 ? STATUS_SMALL : STATUS_LARGE);
      deltas.push(delta);
      prevTicks = ticks;
      last = seq;
    }
    // Trailing not-received entries are reported by a later feedback, if ever.
    statuses.length = last - base + 1;
    for (let seq = base; seq <= last; seq++) this.arrivals.delete(seq);
    this.windowStart = last + 1;

    const chunks: number[] = [];
    for (let i = 0; i < statuses.length; ) {
      const status = statuses[i]!;
      let run = 1;
      while (i + run < statuses.length && statuses[i + run] === status && run < 0x1fff) run++;
      chunks.push((status << 13) | run);
      i += run;
    }
    let deltaBytes = 0;
    for (const d of deltas) deltaBytes += d >= 0 && d <= 255 ? 1 : 2;
    const bodyLength = 4 + 4 + 4 + 4 + chunks.length * 2 + deltaBytes;
    const unpadded = 4 + bodyLength;
    const padding = (4 - (unpadded % 4)) % 4;
    const buf = Buffer.alloc(unpadded + padding);
    buf[0] = 0x80 | (padding > 0 ? 0x20 : 0) | TWCC_FMT;
    buf[1] = RTPFB;
    buf.writeUInt16BE(buf.length / 4 - 1, 2);
    buf.writeUInt32BE(this.senderSsrc, 4);
    buf.writeUInt32BE(this.mediaSsrc, 8);
    buf.writeUInt16BE(base & 0xffff, 12);
    buf.writeUInt16BE(statuses.length, 14);
    buf.writeUIntBE(((referenceUnits % 0x1000000) + 0x1000000) % 0x1000000, 16, 3);
    buf[19] = this.fbCount;
    this.fbCount = (this.fbCount + 1) & 0xff;
    let pos = 20;
    for (const chunk of chunks) {
      buf.writeUInt16BE(chunk, pos);
      pos += 2;
    }
    for (const d of deltas) {
      if (d >= 0 && d <= 255) buf[pos++] = d;
      else {
        buf.writeInt16BE(d, pos);
        pos += 2;
      }
    }
    if (padding > 0) buf[buf.length - 1] = padding;
    return buf;
  }
}

/** The header extensions of one received packet, as werift parses them. */
interface PacketExtensions {
  header: { ssrc: number; extensions: { id: number; payload: Buffer }[] };
}

/**
 * Records the transport-wide sequence number of `rtp` (the extension whose negotiated id maps to
 * `uri` in `uris`, werift's `extIdUriMap`) in `twcc`; returns the feedback packet when one is
 * due. Per packet: no allocation.
 */
export function twccFeedbackFor(
  twcc: TwccFeedback,
  rtp: PacketExtensions,
  uris: Readonly<Record<number, string>>,
  uri: string,
): Buffer | undefined {
  const exts = rtp.header.extensions;
  for (let i = 0; i < exts.length; i++) {
    const ext = exts[i]!;
    if (uris[ext.id] !== uri) continue;
    const seq = transportSequenceNumber(ext.payload);
    if (seq === undefined) return undefined;
    const nowUs = performance.now() * 1000;
    if (!twcc.onPacket(seq, nowUs, rtp.header.ssrc)) return undefined;
    return twcc.build(nowUs);
  }
  return undefined;
}
