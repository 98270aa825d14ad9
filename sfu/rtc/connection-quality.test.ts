/**
 * Connection quality scoring (LiveKit's thresholds): windows of uplink and downlink figures
 * taken every QUALITY_INTERVAL_MS on a manual clock, and the quality they come to.
 */
import { describe, expect, it } from 'vitest';
import { ConnectionQuality } from '@livekit/protocol';
import { createManualClock } from '../../common/clock.ts';
import {
  DownlinkQuality,
  MAX_MOS,
  MIN_SCORE,
  NO_REPORT_MS,
  QUALITY_INTERVAL_MS,
  TrackScorer,
  UplinkQuality,
  packetScore,
  participantQuality,
  qualityRank,
  scoreToMos,
  scoreToQuality,
} from './connection-quality.ts';
import type { DownlinkStats, UplinkStats } from './types.ts';

const { EXCELLENT, GOOD, POOR, LOST } = ConnectionQuality;
/** Opus at 50 packets a second. */
const AUDIO_PPS = 50;

/** Publisher-side windows: `lossShare` of each window's packets missing, `jitterUs` jitter. */
function uplink(kind: 'audio' | 'video', mime: string) {
  const clock = createManualClock();
  const q = new UplinkQuality(mime, kind);
  const stats: UplinkStats = { packetsExpected: 0, packetsReceived: 0, jitterUs: 0, lastPacketAt: 0, subscribers: 1 };
  q.update({ ...stats }, false, clock.now());
  return {
    q,
    stats,
    window(opts: { pps?: number; lossShare?: number; jitterUs?: number; muted?: boolean; subscribers?: number } = {}) {
      clock.advance(QUALITY_INTERVAL_MS);
      const packets = Math.round(((opts.pps ?? AUDIO_PPS) * QUALITY_INTERVAL_MS) / 1000);
      stats.packetsExpected += packets;
      stats.packetsReceived += packets - Math.round(packets * (opts.lossShare ?? 0));
      stats.jitterUs = opts.jitterUs ?? 2000;
      stats.subscribers = opts.subscribers ?? 1;
      if (packets > 0) stats.lastPacketAt = clock.now();
      q.update({ ...stats }, opts.muted ?? false, clock.now());
      return q.scorer.quality;
    },
  };
}

/** Subscriber-side windows from receiver reports. */
function downlink(mime = 'audio/opus') {
  const clock = createManualClock();
  const q = new DownlinkQuality(mime);
  const stats: DownlinkStats = {
    packetsSent: 0,
    reports: 0,
    reportedExpected: 0,
    reportedLost: 0,
    rttMs: 0,
    jitterUs: 0,
    lastReportAt: 0,
  };
  q.update({ ...stats }, 0, clock.now());
  return {
    q,
    clock,
    window(opts: { lossShare?: number; rttMs?: number; jitterUs?: number; upstreamJitterUs?: number; report?: boolean } = {}) {
      clock.advance(QUALITY_INTERVAL_MS);
      const packets = (AUDIO_PPS * QUALITY_INTERVAL_MS) / 1000;
      stats.packetsSent += packets;
      if (opts.report ?? true) {
        stats.reports += 2;
        stats.reportedExpected += packets;
        stats.reportedLost += Math.round(packets * (opts.lossShare ?? 0));
        stats.rttMs = opts.rttMs ?? 20;
        stats.jitterUs = opts.jitterUs ?? 3000;
        stats.lastReportAt = clock.now();
      }
      q.update({ ...stats }, opts.upstreamJitterUs ?? 0, clock.now());
      return q.scorer.quality;
    },
  };
}

const times = <T>(n: number, fn: () => T): T => {
  let last!: T;
  for (let i = 0; i < n; i++) last = fn();
  return last;
};

describe('score → quality and MOS', () => {
  it.each([
    [100, EXCELLENT],
    [80.1, EXCELLENT],
    [80, GOOD],
    [40.1, GOOD],
    [40, POOR],
    [20.1, POOR],
    [20, LOST],
    [0, LOST],
  ])('score %d is %s', (score, quality) => {
    expect(scoreToQuality(score)).toBe(quality);
  });

  it('maps the score to a MOS between 1 and 4.5', () => {
    expect(scoreToMos(100)).toBe(MAX_MOS);
    expect(scoreToMos(0)).toBe(1);
    expect(scoreToMos(80)).toBeGreaterThan(scoreToMos(40));
  });

  it('orders qualities LOST < POOR < GOOD < EXCELLENT', () => {
    expect([EXCELLENT, LOST, GOOD, POOR].toSorted((a, b) => qualityRank(a) - qualityRank(b))).toEqual([LOST, POOR, GOOD, EXCELLENT]);
  });

  it('costs delay as the simplified E-model: rtt/2 + 2·jitter, steeper past 160 ms', () => {
    const base = { durationMs: 5000, packets: 250, lost: 0 };
    expect(packetScore({ ...base, rttMs: 80, jitterUs: 10_000 }, 8)).toBeCloseTo(100 - 60 / 40, 6);
    expect(packetScore({ ...base, rttMs: 400, jitterUs: 0 }, 8)).toBeCloseTo(100 - (200 - 120) / 10, 6);
    expect(packetScore({ ...base, rttMs: 0, jitterUs: 0, lost: 5 }, 10)).toBeCloseTo(100 - 2 * 10, 6);
  });
});

describe('uplink quality', () => {
  it('is EXCELLENT on a clean link', () => {
    const up = uplink('audio', 'audio/opus');
    expect(times(4, () => up.window())).toBe(EXCELLENT);
    expect(up.q.scorer.score).toBeGreaterThan(99);
  });

  it('is GOOD at 5 % opus loss (2.5 % falls to GOOD, 7.5 % to POOR)', () => {
    const up = uplink('audio', 'audio/opus');
    expect(times(4, () => up.window({ lossShare: 0.05 }))).toBe(GOOD);
  });

  it('is GOOD at 4 % video loss and POOR at 20 %', () => {
    expect(times(4, () => uplink('video', 'video/VP8').window({ pps: 300, lossShare: 0.04 }))).toBe(GOOD);
    expect(times(4, () => uplink('video', 'video/VP8').window({ pps: 300, lossShare: 0.2 }))).toBe(POOR);
  });

  it('drops fast and recovers slowly', () => {
    const up = uplink('audio', 'audio/opus');
    up.window();
    expect(up.window({ lossShare: 0.2 })).toBe(POOR);
    expect(up.q.scorer.score).toBe(MIN_SCORE);
    // 0.4 of the way up per clean window: 58, 75, 85.
    expect(up.window()).toBe(GOOD);
    expect(up.window()).toBe(GOOD);
    expect(up.window()).toBe(EXCELLENT);
  });

  it('is LOST when nothing arrives while unmuted, and climbs back once packets flow', () => {
    const up = uplink('audio', 'audio/opus');
    up.window();
    expect(up.window({ pps: 0 })).toBe(LOST);
    expect(up.window()).toBe(GOOD);
  });

  it('does not blame the publisher for video paused without subscribers (dynacast), nor for a mute', () => {
    const up = uplink('video', 'video/VP8');
    up.window({ pps: 300 });
    expect(up.window({ pps: 0, subscribers: 0 })).toBe(EXCELLENT);
    const audio = uplink('audio', 'audio/opus');
    audio.window({ lossShare: 0.2 });
    expect(audio.window({ pps: 0, muted: true })).toBe(EXCELLENT);
  });

  it('stays LOST through a mute until packets flow again (LiveKit: muting when LOST does not reset)', () => {
    const up = uplink('audio', 'audio/opus');
    up.window();
    expect(up.window({ pps: 0 })).toBe(LOST);
    expect(up.window({ pps: 0, muted: true })).toBe(LOST);
  });

  it('weighs loss less when the packet rate falls well below the best seen (DTX)', () => {
    const scorer = new TrackScorer('audio/opus');
    scorer.update({ durationMs: 5000, packets: 250, lost: 0, rttMs: 0, jitterUs: 0 });
    // 2 of 25 packets lost at a tenth of the rate: weight 8·√0.1 → loss effect 20 → EXCELLENT still.
    scorer.update({ durationMs: 5000, packets: 25, lost: 1, rttMs: 0, jitterUs: 0 });
    expect(scorer.quality).toBe(EXCELLENT);
  });
});

describe('downlink quality (receiver reports)', () => {
  it('is EXCELLENT on a clean link with loopback RTT', () => {
    const down = downlink();
    expect(times(3, () => down.window({ rttMs: 2 }))).toBe(EXCELLENT);
  });

  it('is POOR at 25 % reported loss', () => {
    const down = downlink();
    expect(down.window({ lossShare: 0.25 })).toBe(POOR);
  });

  it('is POOR with a very large RTT', () => {
    const down = downlink();
    expect(times(3, () => down.window({ rttMs: 2000 }))).toBe(POOR);
  });

  it("discounts the publisher's jitter from what the subscriber reports", () => {
    const withUpstream = downlink();
    const alone = downlink();
    times(3, () => withUpstream.window({ jitterUs: 50_000, upstreamJitterUs: 48_000 }));
    times(3, () => alone.window({ jitterUs: 50_000 }));
    expect(withUpstream.q.scorer.score).toBeGreaterThan(alone.q.scorer.score);
  });

  it('waits for receiver reports, and is POOR after sending for 30 s without one', () => {
    const down = downlink();
    down.window();
    const windowsToStale = Math.ceil(NO_REPORT_MS / QUALITY_INTERVAL_MS);
    for (let i = 0; i < windowsToStale; i++) expect(down.window({ report: false })).toBe(EXCELLENT);
    expect(down.window({ report: false })).toBe(POOR);
  });
});

describe('participant quality', () => {
  it('is the worst track, EXCELLENT without tracks', () => {
    expect(participantQuality([])).toEqual({ quality: EXCELLENT, mos: MAX_MOS });
    const mixed = participantQuality([100, 55, 90]);
    expect(mixed.quality).toBe(GOOD);
    expect(mixed.mos).toBeCloseTo(scoreToMos(55), 6);
  });
});
