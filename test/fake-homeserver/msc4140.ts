/**
 * MSC4140 delayed events inside the fake homeserver, as Synapse 1.132 runs them with
 * `max_event_delay_duration` set (fixtures/synapse-1.132/client/07a-07c, README rules 19,
 * 22-26; fixtures/element-call/README.md):
 * - `?org.matrix.msc4140.delay=<ms>` on `PUT …/state/…` and `PUT …/send/…` schedules instead of
 *   sending: `{"delay_id": "syd_<20 letters>"}`; not an integer → 400 M_INVALID_PARAM; above the
 *   maximum → 400 M_UNKNOWN + `org.matrix.msc4140.errcode: M_MAX_DELAY_EXCEEDED`; feature off →
 *   400 M_UNKNOWN + `M_MAX_DELAY_UNSUPPORTED` (synapse/rest/client/room.py);
 * - `GET …/delayed_events` lists the caller's own; `POST …/delayed_events/{id}` with
 *   `{"action": "restart"|"cancel"|"send"}` needs a user (401 without), and another user's or an
 *   unknown id is 404 M_NOT_FOUND "Delayed event not found"; the path form
 *   `…/delayed_events/{id}/restart` does not exist on 1.132 (404 M_UNRECOGNIZED);
 * - when the delay ends the event is sent as its user and power levels are checked then (a
 *   refused event is dropped); a state write by another user at the same (room, type,
 *   state_key) cancels pending delayed state events (synapse/handlers/delayed_events.py
 *   `_handle_state_deltas`); at most `maxPerUser` (100) pending per user.
 * Timers run on the injected clock. Lifecycle: created by server.ts with the model; `stop()`
 * clears the timers.
 */
import { randomBytes } from 'node:crypto';
import type express from 'express';
import type { Request } from 'express';
import type { Clock, TimerHandle } from '../../common/clock.ts';
import { MatrixApiError, type HomeserverModel } from './model.ts';
import { handler, sendJson, type FakeHomeserverContext } from './http-util.ts';

export const MSC4140_PREFIX = '/_matrix/client/unstable/org.matrix.msc4140';
const DELAY_PARAM = 'org.matrix.msc4140.delay';

interface DelayedEvent {
  delayId: string;
  userId: string;
  roomId: string;
  type: string;
  stateKey: string | undefined;
  content: Record<string, unknown>;
  /** MSC4354: sent as a sticky event of this duration when it fires. */
  stickyDurationMs: number | undefined;
  delay: number;
  runningSince: number;
  timer: TimerHandle;
}

export interface DelayedEvents {
  /** The delay the request asks for (undefined = send now); throws the recorded 400s. */
  parseDelay(req: Request): number | undefined;
  schedule(userId: string, roomId: string, type: string, stateKey: string | undefined, content: Record<string, unknown>, delay: number, stickyDurationMs?: number): string;
  pendingIds(): string[];
  /** Delayed events that fired but were refused at send time (e.g. power levels). */
  readonly refused: { delayId: string; error: string }[];
  mount(app: express.Express, ctx: FakeHomeserverContext): void;
  stop(): void;
}

const letters = (n: number) => Array.from(randomBytes(n), (b) => String.fromCharCode((b & 32 ? 97 : 65) + (b % 26))).join('');

export function createDelayedEvents(deps: { model: HomeserverModel; clock: Clock; maxDelayMs: number | undefined; maxPerUser?: number }): DelayedEvents {
  const { model, clock, maxDelayMs } = deps;
  const maxPerUser = deps.maxPerUser ?? 100;
  const pending = new Map<string, DelayedEvent>();
  const refused: { delayId: string; error: string }[] = [];

  function fire(id: string): void {
    const e = pending.get(id);
    if (!e) return;
    pending.delete(id);
    clock.clearTimeout(e.timer);
    try {
      if (e.stateKey !== undefined) model.sendState(e.userId, e.roomId, e.type, e.stateKey, e.content);
      else model.sendEvent(e.userId, e.roomId, e.type, e.content, e.stickyDurationMs === undefined ? {} : { sticky: { duration_ms: e.stickyDurationMs } });
    } catch (err) {
      refused.push({ delayId: id, error: (err as Error).message });
    }
  }

  function arm(e: DelayedEvent): void {
    clock.clearTimeout(e.timer);
    e.runningSince = clock.now();
    e.timer = clock.setTimeout(() => fire(e.delayId), e.delay);
  }

  // Another user's state write at the same key cancels pending delayed state events.
  model.onEvent((ev) => {
    if (ev.state_key === undefined) return;
    for (const e of Array.from(pending.values())) {
      if (e.roomId === ev.room_id && e.type === ev.type && e.stateKey === ev.state_key && e.userId !== ev.sender) {
        clock.clearTimeout(e.timer);
        pending.delete(e.delayId);
      }
    }
  });

  const api: DelayedEvents = {
    refused,
    parseDelay(req) {
      const raw = req.query[DELAY_PARAM];
      if (raw === undefined) return undefined;
      if (typeof raw !== 'string' || !/^-?\d+$/.test(raw)) throw new MatrixApiError(400, 'M_INVALID_PARAM', `Query parameter ${DELAY_PARAM} must be an integer`);
      const delay = Number(raw);
      if (maxDelayMs === undefined) {
        throw new MatrixApiError(400, 'M_UNKNOWN', 'Delayed events are not supported on this server', { 'org.matrix.msc4140.errcode': 'M_MAX_DELAY_UNSUPPORTED' });
      }
      if (delay > maxDelayMs) {
        throw new MatrixApiError(400, 'M_UNKNOWN', 'The requested delay exceeds the allowed maximum.', { 'org.matrix.msc4140.errcode': 'M_MAX_DELAY_EXCEEDED', 'org.matrix.msc4140.max_delay': maxDelayMs });
      }
      return delay;
    },
    schedule(userId, roomId, type, stateKey, content, delay, stickyDurationMs) {
      model.room(roomId);
      if ([...pending.values()].filter((e) => e.userId === userId).length >= maxPerUser) {
        throw new MatrixApiError(400, 'M_UNKNOWN', 'The maximum number of delayed events has been reached.', { 'org.matrix.msc4140.errcode': 'M_MAX_DELAY_UNSUPPORTED' });
      }
      const delayId = `syd_${letters(20)}`;
      const e: DelayedEvent = { delayId, userId, roomId, type, stateKey, content, stickyDurationMs, delay, runningSince: 0, timer: undefined as unknown as TimerHandle };
      pending.set(delayId, e);
      arm(e);
      return delayId;
    },
    pendingIds: () => [...pending.keys()],
    mount(app, ctx) {
      app.get(`${MSC4140_PREFIX}/delayed_events`, handler((req, res) => {
        const user = ctx.requester(req);
        const list = [...pending.values()]
          .filter((e) => e.userId === user)
          .map((e) => ({
            delay_id: e.delayId,
            room_id: e.roomId,
            type: e.type,
            ...(e.stateKey !== undefined ? { state_key: e.stateKey } : {}),
            delay: e.delay,
            running_since: e.runningSince,
            content: e.content,
          }));
        sendJson(res, 200, { delayed_events: list });
      }));
      app.post(`${MSC4140_PREFIX}/delayed_events/:delayId`, handler((req, res) => {
        const user = ctx.requester(req);
        const body = (req.body ?? {}) as { action?: unknown };
        if (body.action === undefined) throw new MatrixApiError(400, 'M_MISSING_PARAM', "'action' is missing");
        if (body.action !== 'cancel' && body.action !== 'restart' && body.action !== 'send') {
          throw new MatrixApiError(400, 'M_INVALID_PARAM', "'action' is not one of 'cancel', 'restart', 'send'");
        }
        const e = pending.get(String(req.params.delayId));
        if (!e || e.userId !== user) throw new MatrixApiError(404, 'M_NOT_FOUND', 'Delayed event not found');
        if (body.action === 'restart') arm(e);
        else if (body.action === 'cancel') {
          clock.clearTimeout(e.timer);
          pending.delete(e.delayId);
        } else fire(e.delayId);
        sendJson(res, 200, {});
      }));
    },
    stop() {
      for (const e of pending.values()) clock.clearTimeout(e.timer);
      pending.clear();
    },
  };
  return api;
}
