/**
 * Connection quality, scored as LiveKit does (livekit/livekit pkg/sfu/connectionquality
 * scorer.go, connectionstats.go; pkg/rtc/room.go connectionQualityWorker):
 * - Every `QUALITY_INTERVAL_MS` each track gets a window: packets, packets lost, RTT and jitter.
 *   Published tracks use what their packets say about the uplink (sequence-number loss after
 *   NACK recovery, RFC 3550 jitter; no RTT, as LiveKit); subscribed tracks use the subscriber's
 *   receiver reports (loss, RTT, jitter minus the publisher's own jitter).
 * - A simplified E-model turns the window into a score 0..100: delay effect from
 *   rtt/2 + 2·jitter (ms) and loss effect = loss% × codec weight (opus 8, red 4, video 10),
 *   the weight scaled down by √(packet rate / best packet rate) for DTX and quiet screens.
 *   Scores move smoothly (×0.4 up, ×0.8 down), floor 30 while packets flow.
 * - Quality: score > 80 EXCELLENT, > 40 GOOD, > 20 POOR, else LOST. A window with no packets
 *   while the track should be flowing is LOST (uplink: nothing arrived) or POOR (downlink: we
 *   send but no receiver report for `NO_REPORT_MS`); muted tracks reset to EXCELLENT.
 * - A participant's quality is its worst track (none: EXCELLENT), `score` the MOS of it.
 * - `ConnectionQualityObserver` sends, when any ACTIVE participant's quality changed or one is
 *   new, each ACTIVE participant one ConnectionQualityUpdate with its own quality and that of
 *   every participant it subscribes to.
 *
 * The scorer is pure (times are passed in); the observer runs on the injected clock.
 * Lifecycle: the Room makes one observer, `start()` on construction, `stop()` on close.
 */
import {
  ConnectionQuality,
  ConnectionQualityInfo,
  ConnectionQualityUpdate,
  ParticipantInfo_State,
  SignalResponse,
} from '@livekit/protocol';
import { repeatEvery, type Clock, type Repeating } from '../../common/clock.ts';
import type { Logger } from '../../common/logger.ts';
import type { DownlinkStats, UplinkStats } from './types.ts';
import type { Participant } from './participant.ts';

export const QUALITY_INTERVAL_MS = 5000;
/** Downlink: sending, yet no receiver report for this long, counts as a dry window. */
export const NO_REPORT_MS = 30_000;

export const MAX_SCORE = 100;
export const MIN_SCORE = 30;
const INCREASE_FACTOR = 0.4;
const DECREASE_FACTOR = 0.8;
/** Score above which a track is EXCELLENT / GOOD / POOR (at or below the last: LOST). */
export const GOOD_SCORE = 80;
export const POOR_SCORE = 40;
export const LOST_SCORE = 20;
export const MAX_MOS = 4.5;

/** One analysis window of a track. */
export interface WindowStat {
  durationMs: number;
  packets: number;
  lost: number;
  /** 0 when unknown or not counted. */
  rttMs: number;
  jitterUs: number;
}

/** How much a lost percent costs, by codec (LiveKit getPacketLossWeight). */
export function packetLossWeight(mimeType: string): number {
  const mime = mimeType.toLowerCase();
  if (mime === 'audio/red') return 4; // 5 %: GOOD, 15 %: POOR
  if (mime.startsWith('video/')) return 10; // 2 %: GOOD, 6 %: POOR
  return 8; // opus: 2.5 %: GOOD, 7.5 %: POOR
}

/** Score of one window before smoothing (simplified E-model). */
export function packetScore(stat: WindowStat, lossWeight: number): number {
  const delay = stat.rttMs / 2 + (stat.jitterUs * 2) / 1000;
  const delayEffect = delay > 160 ? (delay - 120) / 10 : delay / 40;
  const lossEffect = stat.packets > 0 ? ((Math.max(0, stat.lost) * 100) / stat.packets) * lossWeight : 0;
  return Math.max(0, MAX_SCORE - delayEffect - lossEffect);
}

export function scoreToQuality(score: number): ConnectionQuality {
  if (score > GOOD_SCORE) return ConnectionQuality.EXCELLENT;
  if (score > POOR_SCORE) return ConnectionQuality.GOOD;
  if (score > LOST_SCORE) return ConnectionQuality.POOR;
  return ConnectionQuality.LOST;
}

export function scoreToMos(score: number): number {
  if (score <= 0) return 1;
  if (score >= 100) return MAX_MOS;
  return 1 + 0.035 * score + 0.000007 * score * (score - 60) * (100 - score);
}

/** LOST < POOR < GOOD < EXCELLENT (the enum's numbers do not order them). */
export function qualityRank(q: ConnectionQuality): number {
  switch (q) {
    case ConnectionQuality.LOST:
      return 0;
    case ConnectionQuality.POOR:
      return 1;
    case ConnectionQuality.GOOD:
      return 2;
    default:
      return 3;
  }
}

/** The score of one track, window after window. */
export class TrackScorer {
  score = MAX_SCORE;
  private readonly lossWeight: number;
  private maxPps = 0;

  constructor(mimeType: string) {
    this.lossWeight = packetLossWeight(mimeType);
  }

  get quality(): ConnectionQuality {
    return scoreToQuality(this.score);
  }

  /** A window with packets. */
  update(stat: WindowStat): void {
    let weight = this.lossWeight;
    if (stat.durationMs > 0) {
      const pps = (stat.packets * 1000) / stat.durationMs;
      if (pps > this.maxPps) this.maxPps = pps;
      if (this.maxPps > 0) weight *= Math.sqrt(Math.min(1, pps / this.maxPps));
    }
    if (stat.packets === 0) {
      this.dry(false);
      return;
    }
    const target = packetScore(stat, weight);
    const factor = target < this.score ? DECREASE_FACTOR : INCREASE_FACTOR;
    this.score = Math.max(MIN_SCORE, factor * target + (1 - factor) * this.score);
  }

  /** A window without packets though some were due: LOST when nothing is heard, else POOR. */
  dry(lost: boolean): void {
    this.score = lost ? LOST_SCORE : POOR_SCORE;
  }

  /** Muted (or paused on purpose): nothing to judge; a LOST track stays LOST until packets flow. */
  muted(): void {
    if (this.score !== LOST_SCORE) this.score = MAX_SCORE;
  }
}

/** Uplink of one published track: windows from cumulative `UplinkStats`. */
export class UplinkQuality {
  readonly scorer: TrackScorer;
  private readonly kind: 'audio' | 'video';
  private last: UplinkStats | undefined;
  private lastAt = 0;

  constructor(mimeType: string, kind: 'audio' | 'video') {
    this.scorer = new TrackScorer(mimeType);
    this.kind = kind;
  }

  /** One window ending at `now`; the first call only takes the baseline. */
  update(stats: UplinkStats, muted: boolean, now: number): void {
    const prev = this.last;
    const durationMs = now - this.lastAt;
    this.last = stats;
    this.lastAt = now;
    if (muted) {
      this.scorer.muted();
      return;
    }
    if (!prev) return;
    const packets = stats.packetsExpected - prev.packetsExpected;
    if (packets <= 0) {
      // Video without subscribers may be paused by dynacast: not the publisher's fault.
      if (this.kind === 'video' && stats.subscribers === 0) this.scorer.muted();
      else this.scorer.dry(true);
      return;
    }
    const received = stats.packetsReceived - prev.packetsReceived;
    this.scorer.update({ durationMs, packets, lost: Math.max(0, packets - received), rttMs: 0, jitterUs: stats.jitterUs });
  }
}

/** Downlink of one subscription: windows from cumulative `DownlinkStats` (receiver reports). */
export class DownlinkQuality {
  readonly scorer: TrackScorer;
  private last: DownlinkStats | undefined;
  private lastAt = 0;
  private streamingSince = 0;

  constructor(mimeType: string) {
    this.scorer = new TrackScorer(mimeType);
  }

  /** One window ending at `now`; `upstreamJitterUs` is discounted from the reported jitter. */
  update(stats: DownlinkStats, upstreamJitterUs: number, now: number): void {
    const prev = this.last;
    const durationMs = now - this.lastAt;
    this.last = stats;
    this.lastAt = now;
    if (!prev) return;
    const sending = stats.packetsSent > prev.packetsSent;
    if (!sending) {
      this.streamingSince = 0;
      return;
    }
    if (this.streamingSince === 0) this.streamingSince = now;
    if (stats.reports === prev.reports) {
      const since = Math.max(stats.lastReportAt, this.streamingSince);
      if (now - since > NO_REPORT_MS) this.scorer.dry(false);
      return;
    }
    const packets = stats.reportedExpected - prev.reportedExpected;
    if (packets <= 0) return;
    this.scorer.update({
      durationMs,
      packets,
      lost: stats.reportedLost - prev.reportedLost,
      rttMs: stats.rttMs,
      jitterUs: Math.max(0, stats.jitterUs - upstreamJitterUs),
    });
  }
}

/** The worst of a participant's track scores (none: EXCELLENT at the top score). */
export function participantQuality(scores: Iterable<number>): { quality: ConnectionQuality; mos: number } {
  let worst = MAX_SCORE;
  for (const s of scores) if (s < worst) worst = s;
  return { quality: scoreToQuality(worst), mos: scoreToMos(worst) };
}

interface ParticipantTracks {
  up: Map<string, UplinkQuality>;
  down: Map<string, DownlinkQuality>;
}

/**
 * Scores every participant of a room each interval and sends the updates (see the file
 * comment). Reads `published` / `subscriptions` of the participants it is given.
 */
export class ConnectionQualityObserver {
  private readonly clock: Clock;
  private readonly participants: () => Iterable<Participant>;
  private readonly log: Logger;
  private readonly tracks = new Map<string, ParticipantTracks>();
  private previous = new Map<string, ConnectionQuality>();
  private readonly rounds: Repeating;

  constructor(deps: { clock: Clock; participants: () => Iterable<Participant>; logger: Logger }) {
    this.clock = deps.clock;
    this.participants = deps.participants;
    this.log = deps.logger;
    this.rounds = repeatEvery(this.clock, QUALITY_INTERVAL_MS, () => this.tick(), (err) =>
      this.log.warn({ err }, 'connection quality round failed'),
    );
  }

  start(): void {
    this.rounds.start();
  }

  stop(): void {
    this.rounds.stop();
  }

  /** One round: score, then send if anything changed. Public for tests. */
  tick(): void {
    const now = this.clock.now();
    const list = [...this.participants()].filter((p) => !p.isClosed && p.state === ParticipantInfo_State.ACTIVE);
    const infos = new Map<string, ConnectionQualityInfo>();
    for (const p of list) infos.set(p.sid, this.score(p, now));
    for (const sid of this.tracks.keys()) if (!infos.has(sid)) this.tracks.delete(sid);

    let changed = false;
    for (const [sid, info] of infos) {
      if (this.previous.get(sid) !== info.quality) changed = true;
    }
    this.previous = new Map([...infos].map(([sid, info]) => [sid, info.quality]));
    if (!changed) return;

    for (const p of list) {
      const updates: ConnectionQualityInfo[] = [infos.get(p.sid)!];
      const seen = new Set<string>([p.sid]);
      for (const sub of p.subscriptions.values()) {
        if (seen.has(sub.publisher)) continue;
        seen.add(sub.publisher);
        const info = infos.get(sub.publisher);
        if (info) updates.push(info);
      }
      p.send(
        new SignalResponse({
          message: { case: 'connectionQuality', value: new ConnectionQualityUpdate({ updates }) },
        }),
      );
    }
  }

  private score(p: Participant, now: number): ConnectionQualityInfo {
    let t = this.tracks.get(p.sid);
    if (!t) {
      t = { up: new Map(), down: new Map() };
      this.tracks.set(p.sid, t);
    }
    const scores: number[] = [];
    for (const [sid, track] of p.published) {
      let q = t.up.get(sid);
      if (!q) {
        q = new UplinkQuality(track.info.mimeType, track.upstream.kind);
        t.up.set(sid, q);
      }
      q.update(track.upstream.uplinkStats(), track.info.muted, now);
      scores.push(q.scorer.score);
    }
    for (const sid of t.up.keys()) if (!p.published.has(sid as never)) t.up.delete(sid);
    for (const [sid, sub] of p.subscriptions) {
      let q = t.down.get(sid);
      if (!q) {
        q = new DownlinkQuality(sub.track.info.mimeType);
        t.down.set(sid, q);
      }
      if (sub.disabled || sub.track.info.muted) q.scorer.muted();
      else q.update(sub.down.link(), sub.track.upstream.uplinkStats().jitterUs, now);
      scores.push(q.scorer.score);
    }
    for (const sid of t.down.keys()) if (!p.subscriptions.has(sid as never)) t.down.delete(sid);
    const { quality, mos } = participantQuality(scores);
    return new ConnectionQualityInfo({ participantSid: p.sid, quality, score: mos });
  }
}
