/**
 * Link statistics of the media layer, as plain-number helpers cheap enough for the packet path.
 * - `ReceiveCounters` + `countArrival`: what a published layer's packets say about the uplink:
 *   packets expected from the extended highest sequence number vs packets received (RFC 3550
 *   A.3; retransmissions that fill a gap count as received, so loss is measured after NACK
 *   recovery) and interarrival jitter (RFC 3550 §6.4.1, from arrival time vs RTP timestamp).
 * - `SenderReportHistory` + `rttFromReport`: round-trip time from a subscriber's receiver report
 *   (RTT = arrival − time the SR named by LSR was sent − DLSR). werift's RTCRtpSender keeps only
 *   its latest SR and drops every RR that names an older one, so the sender-feedback hook
 *   remembers the last few SRs itself.
 *
 * No allocation per packet; `countArrival` is a handful of arithmetic operations.
 */

/** Per-layer receive figures, updated by `countArrival` for each packet. */
export interface ReceiveCounters {
  /** Packets received (duplicates and retransmissions included). */
  received: number;
  started: boolean;
  /** Extended sequence numbers: first seen and highest seen. */
  baseSeq: number;
  maxSeq: number;
  /** Expected packets folded in from before a stream restart (new SSRC). */
  expectedBefore: number;
  /** RFC 3550 interarrival jitter estimate, RTP timestamp units. */
  jitter: number;
  lastTransit: number;
  lastTs: number;
}

export function newReceiveCounters(): ReceiveCounters {
  return {
    received: 0,
    started: false,
    baseSeq: 0,
    maxSeq: 0,
    expectedBefore: 0,
    jitter: 0,
    lastTransit: 0,
    lastTs: 0,
  };
}

const TS_WRAP = 2 ** 32;
const TS_HALF = 2 ** 31;

/**
 * Counts one packet: `seq`/`ts` from its RTP header, `nowMs` its arrival (the clock the caller
 * already read), `clockRate` the codec's RTP clock. Jitter is updated only for in-order packets
 * starting a new timestamp (as libwebrtc does: packets of one video frame leave together).
 */
export function countArrival(c: ReceiveCounters, seq: number, ts: number, nowMs: number, clockRate: number): void {
  c.received++;
  const arrival = (nowMs * clockRate) / 1000;
  if (!c.started) {
    c.started = true;
    c.baseSeq = seq;
    c.maxSeq = seq;
    c.lastTs = ts;
    c.lastTransit = arrival - ts;
    return;
  }
  const delta = (seq - c.maxSeq) & 0xffff;
  if (delta === 0 || delta >= 0x8000) return; // duplicate, or older (reordered / retransmitted)
  c.maxSeq += delta;
  if (ts === c.lastTs) return;
  const transit = arrival - ts;
  let d = transit - c.lastTransit;
  // The RTP timestamp wraps at 2^32: a jump of about ±2^32 in transit is the wrap, not jitter.
  if (d > TS_HALF) d -= TS_WRAP;
  else if (d < -TS_HALF) d += TS_WRAP;
  c.lastTransit = transit;
  c.lastTs = ts;
  c.jitter += (Math.abs(d) - c.jitter) / 16;
}

/** The stream restarted (new SSRC): keep the totals, start the numbering again. */
export function restartCounters(c: ReceiveCounters): void {
  c.expectedBefore = expectedPackets(c);
  c.started = false;
  c.jitter = 0;
}

/** Packets expected so far (all restarts included). */
export function expectedPackets(c: ReceiveCounters): number {
  return c.expectedBefore + (c.started ? c.maxSeq - c.baseSeq + 1 : 0);
}

/** Jitter in microseconds for a codec clock rate. */
export function jitterMicros(jitterRtpUnits: number, clockRate: number): number {
  return clockRate > 0 ? (jitterRtpUnits * 1e6) / clockRate : 0;
}

// ---- RTT from receiver reports ----

/** Middle 32 bits of a 64-bit NTP timestamp (the LSR of RFC 3550). */
export function compactNtp(ntp: bigint): number {
  return Number((ntp >> 16n) & 0xffffffffn);
}

/** The last few sender reports: compact NTP timestamp → wall-clock ms they were sent at. */
export class SenderReportHistory {
  private readonly lsr: number[] = [];
  private readonly sentAt: number[] = [];
  private readonly size: number;
  private next = 0;

  constructor(size = 8) {
    this.size = size;
  }

  add(compact: number, sentAtMs: number): void {
    this.lsr[this.next] = compact;
    this.sentAt[this.next] = sentAtMs;
    this.next = (this.next + 1) % this.size;
  }

  /** When the SR with this LSR was sent (the newest one if several share it). */
  sentAtOf(lsr: number): number | undefined {
    for (let k = 1; k <= this.size; k++) {
      const i = (this.next - k + this.size) % this.size;
      if (this.sentAt[i] !== undefined && this.lsr[i] === lsr) return this.sentAt[i];
    }
    return undefined;
  }
}

/** Longest RTT believed; anything above is a mismatched SR. */
export const MAX_RTT_MS = 10_000;

/**
 * RTT in ms from a report block's LSR/DLSR (DLSR in 1/65536 s) received at `nowMs`, or
 * undefined when the report names no SR we remember (LSR 0: the receiver has none yet).
 */
export function rttFromReport(
  history: SenderReportHistory,
  lsr: number,
  dlsr: number,
  nowMs: number,
): number | undefined {
  if (lsr === 0) return undefined;
  const sentAt = history.sentAtOf(lsr);
  if (sentAt === undefined) return undefined;
  const rtt = nowMs - sentAt - (dlsr * 1000) / 65536;
  // A few ms below zero is clock granularity on loopback; more is a wrong match.
  if (rtt < -5 || rtt > MAX_RTT_MS) return undefined;
  return Math.max(0, rtt);
}

/** The fields of one RTCP report block (werift's RtcpReceiverInfo has them). */
export interface ReportBlock {
  /** Extended highest sequence number received. */
  highestSequence: number;
  /** Cumulative packets lost, 24 bits as on the wire (signed). */
  packetsLost: number;
  /** Interarrival jitter, RTP timestamp units. */
  jitter: number;
  lsr: number;
  dlsr: number;
}

/** 24-bit two's complement → number. */
function signed24(v: number): number {
  return v & 0x800000 ? (v & 0xffffff) - 0x1000000 : v & 0xffffff;
}

/**
 * The receiver reports one subscriber sent about one of our senders, as running totals
 * relative to its first report, plus the latest RTT and jitter. Lifecycle: one per downtrack,
 * fed by the sender-feedback hook; `srs` is filled as werift sends sender reports.
 */
export class ReceiverReportState {
  readonly srs = new SenderReportHistory();
  reports = 0;
  reportedExpected = 0;
  reportedLost = 0;
  rttMs = 0;
  jitterUs = 0;
  lastReportAt = 0;
  private lastHighest = 0;
  private lastLost = 0;

  /**
   * Applies one report block received at `nowMs` (wall clock, the one werift stamps its SRs
   * with). Returns the packets expected and lost since the previous report (0/0 for the first)
   * and the RTT it yields, if any.
   */
  onReport(block: ReportBlock, nowMs: number, clockRate: number): { expected: number; lost: number; rttMs: number | undefined } {
    const highest = block.highestSequence >>> 0;
    const lostTotal = signed24(block.packetsLost);
    let expected = 0;
    let lost = 0;
    if (this.reports > 0) {
      expected = (highest - this.lastHighest) | 0;
      lost = lostTotal - this.lastLost;
      // A receiver restart or a stale report: take it as the new baseline.
      if (expected < 0 || expected > 0x8000) expected = 0;
      lost = Math.max(0, Math.min(lost, expected));
    }
    this.reports++;
    this.lastHighest = highest;
    this.lastLost = lostTotal;
    this.reportedExpected += expected;
    this.reportedLost += lost;
    this.jitterUs = jitterMicros(block.jitter, clockRate);
    this.lastReportAt = nowMs;
    const rtt = rttFromReport(this.srs, block.lsr, block.dlsr, nowMs);
    if (rtt !== undefined) this.rttMs = rtt;
    return { expected, lost, rttMs: rtt };
  }
}
