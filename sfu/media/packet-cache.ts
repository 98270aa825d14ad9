/**
 * Loss recovery state of one received video layer: `PacketCache` keeps the last packets as they
 * arrived (shared by every subscriber of the track, which translate their own sequence numbers
 * back to the layer's before looking up), and `UplinkNackTracker` notices gaps in the
 * publisher's sequence numbers and says which ones to NACK, when, and when to give up.
 *
 * Hot path: both are fixed-size typed arrays / a fixed array of references; no allocation per
 * packet. Owned by the Upstream layer they belong to; no timers (driven by packet arrivals).
 */
import type { RtpPacket } from 'werift';

/** A power of two; ~1.7 s of 720p video at 300 packets/s. */
export const PACKET_CACHE_SIZE = 512;

export class PacketCache {
  private readonly slots: (RtpPacket | undefined)[] = Array.from({ length: PACKET_CACHE_SIZE }, () => undefined);

  put(rtp: RtpPacket): void {
    this.slots[rtp.header.sequenceNumber & (PACKET_CACHE_SIZE - 1)] = rtp;
  }

  /** The packet with exactly this sequence number, if still cached. */
  get(seq: number): RtpPacket | undefined {
    const rtp = this.slots[seq & (PACKET_CACHE_SIZE - 1)];
    return rtp !== undefined && rtp.header.sequenceNumber === seq ? rtp : undefined;
  }

  clear(): void {
    this.slots.fill(undefined);
  }
}

const MAX_MISSING = 64;
/** First NACK this long after the gap was seen (tolerates a little reordering). */
const FIRST_NACK_DELAY_MS = 5;
const MAX_NACK_TRIES = 5;
/** A packet missing for this long is not worth asking for any more. */
const GIVE_UP_MS = 1000;

export class UplinkNackTracker {
  private highest = -1;
  private count = 0;
  private readonly seqs = new Int32Array(MAX_MISSING);
  private readonly addedAt = new Float64Array(MAX_MISSING);
  private readonly sentAt = new Float64Array(MAX_MISSING);
  private readonly tries = new Uint8Array(MAX_MISSING);
  /** Reused output of `due`. */
  private readonly out: number[] = [];
  /** Packets that arrived after being counted missing (late or retransmitted). */
  recovered = 0;
  /** Gaps seen (packets counted missing). */
  missed = 0;

  get missingCount(): number {
    return this.count;
  }

  /** Records an arrival; returns true when it fills a gap (a retransmission or a late packet). */
  onPacket(seq: number, now: number): boolean {
    if (this.highest < 0) {
      this.highest = seq;
      return false;
    }
    const diff = (seq - this.highest) & 0xffff;
    if (diff === 0) return false;
    if (diff < 0x8000) {
      const gap = diff - 1;
      if (gap > MAX_MISSING) {
        // A jump (publisher restart, long outage): start over rather than NACK a flood.
        this.count = 0;
      } else {
        for (let i = 1; i <= gap; i++) this.add((this.highest + i) & 0xffff, now);
      }
      this.highest = seq;
      return false;
    }
    return this.remove(seq);
  }

  private add(seq: number, now: number): void {
    if (this.count === MAX_MISSING) this.removeAt(0);
    const i = this.count++;
    this.seqs[i] = seq;
    this.addedAt[i] = now;
    this.sentAt[i] = 0;
    this.tries[i] = 0;
    this.missed++;
  }

  private remove(seq: number): boolean {
    for (let i = 0; i < this.count; i++) {
      if (this.seqs[i] === seq) {
        this.removeAt(i);
        this.recovered++;
        return true;
      }
    }
    return false;
  }

  private removeAt(i: number): void {
    const last = this.count - 1;
    for (let j = i; j < last; j++) {
      this.seqs[j] = this.seqs[j + 1]!;
      this.addedAt[j] = this.addedAt[j + 1]!;
      this.sentAt[j] = this.sentAt[j + 1]!;
      this.tries[j] = this.tries[j + 1]!;
    }
    this.count = last;
  }

  /**
   * Sequence numbers to NACK now (the returned array is reused: read it before the next call);
   * `retryMs` is the wait between two NACKs of one packet (about one round trip).
   */
  due(now: number, retryMs: number): number[] {
    const out = this.out;
    out.length = 0;
    let i = 0;
    while (i < this.count) {
      if (now - this.addedAt[i]! > GIVE_UP_MS || this.tries[i]! >= MAX_NACK_TRIES) {
        this.removeAt(i);
        continue;
      }
      const ready = this.tries[i] === 0 ? now - this.addedAt[i]! >= FIRST_NACK_DELAY_MS : now - this.sentAt[i]! >= retryMs;
      if (ready) {
        out.push(this.seqs[i]!);
        this.sentAt[i] = now;
        this.tries[i]! += 1;
      }
      i++;
    }
    return out;
  }
}
