/**
 * The MatrixRTC features of newer Synapse releases, off by default so the fake stays the 1.132
 * the recordings show. Each is switched on by the homeserver.yaml setting it mirrors:
 * - `experimental_features.msc4143_enabled` (Synapse >= 1.140): `GET
 *   /_matrix/client/unstable/org.matrix.msc4143/rtc/transports` (the only path Synapse registers,
 *   synapse/rest/client/matrixrtc.py) needs a user and answers `{"rtc_transports": [...]}` from
 *   `matrix_rtc.transports`, or `{}` when none are configured. Without the flag (and on 1.132) the
 *   path is unknown: 404 M_UNRECOGNIZED, which Element Call reads as "ask .well-known or config";
 * - `experimental_features.msc4354_enabled` (Synapse >= 1.148): sticky events. `PUT …/send/…`
 *   with `?org.matrix.msc4354.sticky_duration_ms=<ms>` stores the duration in the event's
 *   top-level `msc4354_sticky: {duration_ms}` as given (synapse/rest/client/room.py; not an
 *   integer → 400 M_INVALID_PARAM, negative → 400 M_INVALID_PARAM), also for delayed events
 *   (added when they fire, synapse/handlers/delayed_events.py); when serialising, for clients and
 *   appservice transactions alike, Synapse adds `unsigned.msc4354_sticky_duration_ttl_ms` =
 *   min(origin_server_ts, now) + min(duration, 1 h) − now while that is positive
 *   (rust/src/events/serialize.rs). Sticky events reach an appservice in transactions like any
 *   other timeline event: there is no separate channel. `/versions` advertises
 *   `org.matrix.msc4354`, which matrix-js-sdk checks before sending one. Without the flag the
 *   parameter is ignored and the event is an ordinary one.
 */
import type express from 'express';
import type { Request } from 'express';
import { handler, sendJson, type FakeHomeserverContext } from './http-util.ts';
import { MatrixApiError, type StoredEvent } from './model.ts';

export const STICKY_DURATION_PARAM = 'org.matrix.msc4354.sticky_duration_ms';
export const RTC_TRANSPORTS_PATH = '/_matrix/client/unstable/org.matrix.msc4143/rtc/transports';
/** MSC4354's cap, applied when reading the duration (Synapse `StickyEvent.MAX_DURATION`). */
export const MAX_STICKY_DURATION_MS = 3_600_000;

export interface RtcTransport {
  type: string;
  [key: string]: unknown;
}

/** The homeserver.yaml settings of newer Synapse releases the fake can mirror. */
export interface MatrixRtcProfile {
  /** `experimental_features.msc4143_enabled` (>= 1.140): serve `/rtc/transports`. */
  msc4143?: boolean;
  /** `matrix_rtc.transports`. */
  transports?: RtcTransport[];
  /** `experimental_features.msc4354_enabled` (>= 1.148): sticky events. */
  msc4354?: boolean;
}

/** Synapse 1.132 as recorded: none of the above. */
export const SYNAPSE_1132_PROFILE: MatrixRtcProfile = {};

export interface MatrixRtcFeatures {
  readonly profile: MatrixRtcProfile;
  /** Unstable features these settings add to `/versions`. */
  unstableFeatures(): Record<string, boolean>;
  /** The sticky duration a send asks for (undefined = not sticky); throws Synapse's 400s. */
  parseStickyDuration(req: Request): number | undefined;
  mount(app: express.Express, ctx: FakeHomeserverContext): void;
}

export function createMatrixRtcFeatures(profile: MatrixRtcProfile = SYNAPSE_1132_PROFILE): MatrixRtcFeatures {
  return {
    profile,
    unstableFeatures: (): Record<string, boolean> => (profile.msc4354 ? { 'org.matrix.msc4354': true } : {}),
    parseStickyDuration(req) {
      if (!profile.msc4354) return undefined;
      const raw = req.query[STICKY_DURATION_PARAM];
      if (raw === undefined) return undefined;
      // synapse/http/servlet.py parse_integer_from_args: int(), then the sign check.
      if (typeof raw !== 'string' || !/^\s*[-+]?\d+\s*$/.test(raw)) {
        throw new MatrixApiError(400, 'M_INVALID_PARAM', `Query parameter ${STICKY_DURATION_PARAM} must be an integer`);
      }
      const ms = Number(raw);
      if (ms < 0) throw new MatrixApiError(400, 'M_INVALID_PARAM', `Query parameter ${STICKY_DURATION_PARAM} must be a positive integer.`);
      return ms;
    },
    mount(app, ctx) {
      if (!profile.msc4143) return;
      app.get(RTC_TRANSPORTS_PATH, handler((req, res) => {
        ctx.requester(req);
        const transports = profile.transports ?? [];
        sendJson(res, 200, transports.length ? { rtc_transports: transports } : {});
      }));
    },
  };
}

/**
 * The sticky fields of a serialised event: top-level `msc4354_sticky` as stored, and the
 * remaining TTL in `unsigned` while the event is still sticky at `now`.
 */
export function stickyFields(ev: StoredEvent, now: number): { top?: Record<string, unknown>; ttlMs?: number } {
  if (!ev.sticky) return {};
  const duration = Math.min(ev.sticky.duration_ms, MAX_STICKY_DURATION_MS);
  const expiresAt = Math.min(ev.origin_server_ts, now) + duration;
  return { top: { duration_ms: ev.sticky.duration_ms }, ttlMs: expiresAt > now ? expiresAt - now : undefined };
}

/** The profile a parsed homeserver.yaml asks for (for tests that run the fake as configured). */
export function profileFromHomeserverConfig(config: Record<string, unknown>): MatrixRtcProfile {
  const experimental = (config.experimental_features ?? {}) as Record<string, unknown>;
  const transports = ((config.matrix_rtc ?? {}) as { transports?: RtcTransport[] }).transports;
  return { msc4143: experimental.msc4143_enabled === true, msc4354: experimental.msc4354_enabled === true, ...(transports ? { transports } : {}) };
}
