/**
 * Link statistics: uplink loss from sequence numbers, RFC 3550 interarrival jitter on synthetic
 * arrivals, and RTT from receiver reports against remembered sender reports.
 */
import { describe, expect, it } from 'vitest';
import {
  compactNtp,
  countArrival,
  expectedPackets,
  jitterMicros,
  newReceiveCounters,
  ReceiverReportState,
  restartCounters,
  rttFromReport,
  SenderReportHistory,
} from './link-stats.ts';

const OPUS = 48_000;
const VIDEO = 90_000;

/** Feeds packets `seqs` 20 ms apart in RTP time; `arrivalMs(i)` says when packet i arrived. */
function feed(seqs: number[], clockRate: number, arrivalMs: (i: number) => number, startTs = 1000) {
  const c = newReceiveCounters();
  const step = (clockRate * 20) / 1000;
  seqs.forEach((seq, i) => countArrival(c, seq & 0xffff, (startTs + (seq - seqs[0]!) * step) >>> 0, arrivalMs(i), clockRate));
  return c;
}

describe('uplink loss counters', () => {
  it('expects every sequence number up to the highest and counts what came', () => {
    const seqs = [10, 11, 12, 14, 15, 18, 19, 20];
    const c = feed(seqs, OPUS, (i) => 1_000_000 + i * 20);
    expect(expectedPackets(c)).toBe(11);
    expect(c.received).toBe(8);
  });

  it('counts a late retransmission as received (loss after NACK recovery) and ignores it for ordering', () => {
    const seqs = [100, 101, 103, 104, 102];
    const c = feed(seqs, VIDEO, (i) => 1_000_000 + i * 20);
    expect(expectedPackets(c)).toBe(5);
    expect(c.received).toBe(5);
  });

  it('extends sequence numbers across the 16-bit wrap', () => {
    const seqs = [65534, 65535, 65536, 65538];
    const c = feed(seqs, OPUS, (i) => 1_000_000 + i * 20);
    expect(expectedPackets(c)).toBe(5);
    expect(c.received).toBe(4);
  });

  it('keeps the totals over a stream restart (new SSRC, new numbering)', () => {
    const c = feed([1, 2, 3], OPUS, (i) => 1_000_000 + i * 20);
    restartCounters(c);
    countArrival(c, 5000, 0, 2_000_000, OPUS);
    countArrival(c, 5002, 1920, 2_000_040, OPUS);
    expect(expectedPackets(c)).toBe(3 + 3);
    expect(c.received).toBe(5);
  });
});

describe('RFC 3550 interarrival jitter', () => {
  it('is zero when packets arrive exactly on their RTP clock', () => {
    const c = feed(
      Array.from({ length: 200 }, (_, i) => i),
      OPUS,
      (i) => 5_000_000 + i * 20,
    );
    expect(c.jitter).toBe(0);
  });

  it('converges to the mean deviation for arrivals alternating ±5 ms', () => {
    // Transit alternates between +5 and -5 ms: |D| is 10 ms every packet, so J → 10 ms.
    const c = feed(
      Array.from({ length: 400 }, (_, i) => i),
      OPUS,
      (i) => 5_000_000 + i * 20 + (i % 2 === 0 ? 5 : -5),
    );
    expect(jitterMicros(c.jitter, OPUS)).toBeCloseTo(10_000, -1);
  });

  it('follows J += (|D| - J) / 16 for a single late packet', () => {
    const c = feed([0, 1, 2], VIDEO, (i) => [1_000_000, 1_000_020, 1_000_048][i]!);
    // Packet 2 is 8 ms late: D = 8 ms = 720 ticks at 90 kHz; J = 720 / 16.
    expect(c.jitter).toBeCloseTo(720 / 16, 6);
  });

  it('does not mistake an RTP timestamp wrap for jitter', () => {
    const start = 2 ** 32 - 3 * 960;
    const c = feed(
      Array.from({ length: 10 }, (_, i) => i),
      OPUS,
      (i) => 7_000_000 + i * 20,
      start,
    );
    expect(c.jitter).toBeLessThan(1e-6);
  });

  it('skips packets sharing a timestamp (one video frame sent in a burst)', () => {
    const c = newReceiveCounters();
    countArrival(c, 1, 9000, 1_000_000, VIDEO);
    countArrival(c, 2, 9000, 1_000_009, VIDEO);
    countArrival(c, 3, 9000, 1_000_017, VIDEO);
    countArrival(c, 4, 12000, 1_000_033.333, VIDEO);
    expect(c.jitter).toBeLessThan(0.1);
  });
});

describe('RTT from receiver reports', () => {
  it('is arrival − when the named SR was sent − DLSR', () => {
    const srs = new SenderReportHistory();
    const ntp = (0xb44db705n << 32n) | 0x20000000n;
    srs.add(compactNtp(ntp), 1_000_000);
    srs.add(compactNtp(ntp + (1n << 32n)), 1_001_000);
    expect(compactNtp(ntp)).toBe(0xb7052000);
    // The report names the older SR, held 250 ms (DLSR 0x4000 = 0.25 s) and arrives 300 ms later.
    expect(rttFromReport(srs, 0xb7052000, 0x4000, 1_000_300)).toBeCloseTo(50, 6);
  });

  it('gives nothing for LSR 0, an unknown SR or an impossible result', () => {
    const srs = new SenderReportHistory(2);
    srs.add(111, 1_000_000);
    expect(rttFromReport(srs, 0, 0, 1_000_100)).toBeUndefined();
    expect(rttFromReport(srs, 222, 0, 1_000_100)).toBeUndefined();
    expect(rttFromReport(srs, 111, 65536, 1_000_100)).toBeUndefined(); // DLSR 1 s > elapsed
    srs.add(222, 1_000_500);
    srs.add(333, 1_001_000);
    expect(rttFromReport(srs, 111, 0, 1_001_100)).toBeUndefined(); // forgotten (history of 2)
  });

  it('turns a run of reports into interval loss, totals, jitter and RTT', () => {
    const state = new ReceiverReportState();
    state.srs.add(0x1234, 10_000);
    const first = state.onReport({ highestSequence: 1000, packetsLost: 3, jitter: 480, lsr: 0x1234, dlsr: 6554 }, 10_120, OPUS);
    expect(first).toEqual({ expected: 0, lost: 0, rttMs: expect.closeTo(20, 0) });
    const second = state.onReport({ highestSequence: 1100, packetsLost: 28, jitter: 960, lsr: 0, dlsr: 0 }, 11_000, OPUS);
    expect(second).toEqual({ expected: 100, lost: 25, rttMs: undefined });
    expect(state.reportedExpected).toBe(100);
    expect(state.reportedLost).toBe(25);
    expect(state.jitterUs).toBe(20_000);
    expect(state.rttMs).toBeCloseTo(20, 0);
    // Cumulative lost is a signed 24-bit field: duplicates can make it go down.
    const third = state.onReport({ highestSequence: 1150, packetsLost: 0xffffff, jitter: 0, lsr: 0, dlsr: 0 }, 12_000, OPUS);
    expect(third.lost).toBe(0);
    expect(state.reports).toBe(3);
  });
});
