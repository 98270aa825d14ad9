/**
 * One participant's guard over what its client sends, before it reaches the room or werift:
 * trickled candidates parsed defensively, de-duplicated and bounded per peer connection; AddTrack
 * requests bounded in count and string size; a warning per kind of bad input at most once per
 * interval (the rest counted into that line), so no client can flood the log. Holds no sockets;
 * owned by its Participant and dropped with it.
 */
import type { AddTrackRequest, TrickleRequest } from '@livekit/protocol';
import type { Clock } from '../../common/clock.ts';
import type { Logger } from '../../common/logger.ts';
import type { GuardMetrics } from '../metrics.ts';
import type { SignalLimits } from './limits.ts';
import type { IceCandidateInit, SignalTarget } from './types.ts';

/** A warning of one kind is logged at most this often per participant. */
export const BAD_INPUT_LOG_INTERVAL_MS = 10_000;
/** Longest `candidate` line accepted (real ones are about 100-200 characters). */
export const MAX_CANDIDATE_LENGTH = 1024;
/** Simulcast layers and backup codecs one AddTrack may list (clients send at most 3 and 1). */
export const MAX_TRACK_LAYERS = 8;

export class SignalGuard {
  private readonly limits: SignalLimits;
  private readonly clock: Clock;
  private readonly log: Logger;
  private readonly metrics: GuardMetrics | undefined;
  private readonly candidates: Record<SignalTarget, Set<string>> = { publisher: new Set(), subscriber: new Set() };
  /** kind → last time logged and how many were suppressed since. */
  private readonly lastWarned = new Map<string, { at: number; suppressed: number }>();

  constructor(opts: { limits: SignalLimits; clock: Clock; logger: Logger; metrics?: GuardMetrics | undefined }) {
    this.limits = opts.limits;
    this.clock = opts.clock;
    this.log = opts.logger;
    this.metrics = opts.metrics;
  }

  /** One warn line per `kind` per interval; `limit` (a config key) also counts in /metrics. */
  badInput(kind: string, detail: Record<string, unknown> = {}, limit?: string): void {
    if (limit) this.metrics?.refused(limit);
    const now = this.clock.now();
    const last = this.lastWarned.get(kind);
    if (last && now - last.at < BAD_INPUT_LOG_INTERVAL_MS) {
      last.suppressed++;
      return;
    }
    this.log.warn({ ...detail, suppressed: last?.suppressed ?? 0 }, `ignored from client: ${kind}`);
    this.lastWarned.set(kind, { at: now, suppressed: 0 });
  }

  /** The candidate to hand to the transport, or undefined (bad, repeated, over the cap, or end-of-candidates). */
  trickle(req: TrickleRequest): { target: SignalTarget; init: IceCandidateInit } | undefined {
    const target: SignalTarget = req.target === 1 ? 'subscriber' : 'publisher';
    let parsed: unknown;
    try {
      parsed = JSON.parse(req.candidateInit);
    } catch {
      this.badInput('unparseable trickle candidate');
      return undefined;
    }
    if (parsed === null || typeof parsed !== 'object' || Array.isArray(parsed)) {
      this.badInput('trickle candidate that is not an object');
      return undefined;
    }
    const o = parsed as Record<string, unknown>;
    const { candidate, sdpMid, sdpMLineIndex, usernameFragment } = o;
    if (
      (candidate !== undefined && typeof candidate !== 'string') ||
      (sdpMid !== undefined && sdpMid !== null && typeof sdpMid !== 'string') ||
      (sdpMLineIndex !== undefined && sdpMLineIndex !== null && !Number.isInteger(sdpMLineIndex)) ||
      (usernameFragment !== undefined && usernameFragment !== null && typeof usernameFragment !== 'string')
    ) {
      this.badInput('trickle candidate with mistyped fields');
      return undefined;
    }
    if (!candidate) return undefined;
    if (candidate.length > MAX_CANDIDATE_LENGTH) {
      this.badInput('oversized trickle candidate', { length: candidate.length });
      return undefined;
    }
    const seen = this.candidates[target];
    if (seen.has(candidate)) return undefined;
    if (seen.size >= this.limits.max_candidates_per_transport) {
      this.badInput('trickle candidate over the cap', { target }, 'signal_limits.max_candidates_per_transport');
      return undefined;
    }
    seen.add(candidate);
    return {
      target,
      init: {
        candidate,
        sdpMid: (sdpMid as string | null | undefined) ?? null,
        sdpMLineIndex: (sdpMLineIndex as number | null | undefined) ?? null,
        usernameFragment: (usernameFragment as string | null | undefined) ?? null,
      },
    };
  }

  /** Why an AddTrack is refused (LIMIT_EXCEEDED), or undefined. */
  addTrackProblem(req: AddTrackRequest, pending: number): string | undefined {
    const max = this.limits.max_track_name_length;
    const strings = [req.name, req.cid, req.stream, req.sid, ...req.simulcastCodecs.flatMap((c) => [c.cid, c.codec])];
    if (strings.some((s) => s.length > max)) {
      this.badInput('add_track with an oversized name', {}, 'signal_limits.max_track_name_length');
      return `track name, cid or stream longer than ${max} characters`;
    }
    if (req.layers.length > MAX_TRACK_LAYERS || req.simulcastCodecs.length > MAX_TRACK_LAYERS) {
      this.badInput('add_track with too many layers');
      return `more than ${MAX_TRACK_LAYERS} layers or simulcast codecs`;
    }
    if (pending >= this.limits.max_pending_tracks) {
      this.badInput('add_track over the pending cap', { pending }, 'signal_limits.max_pending_tracks');
      return `more than ${this.limits.max_pending_tracks} tracks waiting for media`;
    }
    return undefined;
  }
}
