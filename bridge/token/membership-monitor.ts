/**
 * The membership monitor (lk-jwt-service's appservice mode, line A `membership_monitor.rs`;
 * matrixrtc-auth-service.md §17): a token is only checked against Matrix room membership when it
 * is issued, so this watches the participants it was issued for and removes from the SFU those
 * whose user has since left the Matrix room (or was kicked or banned). It is the safety net under
 * the appservice's own removal on pushed leave events (bridge/lifecycle), for when a push is lost
 * or late; the two never fight: a participant the lifecycle removed first is NotFound here, which
 * counts as done.
 *
 * Inputs: `register()` from the token endpoints for every token issued in our SFU's rooms (LiveKit
 * room, identity, Matrix room, user); `onSfuEvent()` from `/sfu_webhook` (`participant_joined` →
 * connected, `participant_left` / `participant_connection_aborted` → left, `room_finished` →
 * the room's entries forgotten). A join of an untracked identity is ignored.
 *
 * Every `intervalMs` one sweep: one ListParticipants per LiveKit room with entries (presence the
 * webhooks missed), then one `GET /_matrix/client/v3/rooms/{roomId}/joined_members` (as_token) per
 * Matrix room with a connected participant, 8 requests in flight at most. A connected participant
 * whose user is not in the answer is kicked: its delegated leave job is stopped (the leave would
 * be refused for a user not in the room, and retried for up to an hour), then UpdateParticipant
 * with every permission false, then RemoveParticipant with `revoke_token_ts` = now, so its tokens
 * cannot rejoin; retried (1 s ×1.5, jitter) for at most `KICK_RETRY_MS`; NotFound = done. It stays
 * as `kicked`: its reconnect (a token the SFU does not revoke, e.g. another SFU) is checked at once
 * and removed again, unless the user is a member by then (re-admitted: kick cleared); a new token
 * for it (issued only to a member) clears the kick too and keeps `connected`.
 * joined_members 403 means no user the appservice is interested in is in the room: MSC4502
 * `is_joined?server_name=<ours>` false → our server left, so every LiveKit room of that Matrix
 * room is deleted; true → the registration does not cover the room's users (logged); error → no
 * action. Any other failure (homeserver, CS API unresolvable, SFU list) fails open: nobody is
 * removed on a guess. Entries not connected expire `ENTRY_TTL_MS` (70 min: the token's hour and
 * a margin) after their last change.
 *
 * Several replicas share the store (membership-monitor-store.ts): each interval only the holder of
 * the `sweep` lease sweeps (renewed while it lives, released when it stops, taken over within 1.5
 * intervals when it dies), so the homeserver is asked once per room per interval, not once per
 * replica; and a kick holds a per-participant lease while it runs (at most `KICK_RETRY_MS`), so
 * the replica that saw a kicked participant reconnect and the sweeper (or a sweeper whose lease
 * lapsed during a long sweep and its successor) never both remove it.
 *
 * A failed sweep (the store unreachable) is retried after `RETRY_AFTER_FAILURE_MS`, so the first
 * sweep after a Redis recovery comes at once, not an interval later.
 *
 * Lifecycle: `createMembershipMonitor(deps)` → `start()` (first sweep one interval later) →
 * `register` / `onSfuEvent` from the edges, `sweep()` from the timer (or a test) → `close()`.
 */
import { randomUUID } from 'node:crypto';
import { Counter, Gauge, type Registry } from 'prom-client';
import type { Clock, TimerHandle } from '../../common/clock.ts';
import type { Logger } from '../../common/logger.ts';
import { HomeserverError, type HomeserverClient } from '../homeserver/client.ts';
import { isNotFound, type SfuRoomService } from '../sfu/room-service.ts';
import { createBackoff } from './delayed-event-actions.ts';
import { jobField } from './job-store.ts';
import type { MonitoredParticipant, MonitorStore } from './membership-monitor-store.ts';

/** How long an entry that is not connected is kept after its last change. */
export const ENTRY_TTL_MS = 70 * 60_000;
/** How long one kick is retried. */
export const KICK_RETRY_MS = 60_000;
/** Requests of one sweep in flight at once. */
export const SWEEP_PARALLELISM = 8;
/** After a failed sweep (the store unreachable), the next try comes this soon (at most an interval). */
export const RETRY_AFTER_FAILURE_MS = 1000;

export type MonitorSfu = Pick<SfuRoomService, 'listParticipants' | 'removeParticipant' | 'revokePermissions' | 'deleteRoom'>;

export interface MembershipMonitorDeps {
  clock: Clock;
  logger: Logger;
  metrics: Registry;
  store: MonitorStore;
  sfu: MonitorSfu;
  homeserver: Pick<HomeserverClient, 'joinedMembers' | 'isJoined'>;
  /** Our homeserver's client-server URL (throws when unresolvable). */
  ownCsApi(): Promise<string>;
  asToken: string;
  serverName: string;
  /** LIVEKIT_MEMBERSHIP_CHECK_INTERVAL_SECONDS in ms (> 0). */
  intervalMs: number;
  /** Stops the participant's delegated delayed-leave job (wherever it runs). */
  stopDelayedLeave(room: string, identity: string): Promise<void>;
  replicaId?: string;
  random?: () => number;
}

export interface MonitorRegistration {
  room: string;
  identity: string;
  roomId: string;
  userId: string;
}

export interface SweepReport {
  /** false when another replica holds the sweep lease (or the monitor is closed). */
  swept: boolean;
  kicked: number;
}

export interface MembershipMonitor {
  /** A token was issued; never throws (a store failure is logged: the token still goes out). */
  register(r: MonitorRegistration): Promise<void>;
  /** From `/sfu_webhook`; never throws. Resolves when the event is applied (tests wait on it). */
  onSfuEvent(room: string, identity: string, event: 'joined' | 'left' | 'aborted'): Promise<void>;
  onRoomFinished(room: string): Promise<void>;
  sweep(): Promise<SweepReport>;
  start(): void;
  close(): Promise<void>;
}

function groupBy<T>(items: readonly T[], key: (item: T) => string): Map<string, T[]> {
  const out = new Map<string, T[]>();
  for (const item of items) {
    const list = out.get(key(item));
    if (list) list.push(item);
    else out.set(key(item), [item]);
  }
  return out;
}

/** Runs `fn` over `items`, at most `limit` at once. */
async function eachLimited<T>(items: readonly T[], limit: number, fn: (item: T) => Promise<void>): Promise<void> {
  let next = 0;
  const worker = async () => {
    while (next < items.length) await fn(items[next++]!);
  };
  await Promise.all(Array.from({ length: Math.min(limit, items.length) }, worker));
}

export function createMembershipMonitor(deps: MembershipMonitorDeps): MembershipMonitor {
  const { clock, store, sfu, homeserver } = deps;
  const logger = deps.logger.child({ component: 'membership-monitor' });
  const replicaId = deps.replicaId ?? `replica-${randomUUID()}`;
  const random = deps.random ?? Math.random;
  const sweeps = new Counter({
    name: 'matrixrtc_membership_monitor_sweeps_total',
    help: 'Membership monitor sweeps, by result (done, skipped: another replica sweeps, failed)',
    labelNames: ['result'],
    registers: [deps.metrics],
  });
  const queries = new Counter({
    name: 'matrixrtc_membership_monitor_queries_total',
    help: 'joined_members queries of the membership monitor, by result (ok, refused: 403, failed, unresolvable)',
    labelNames: ['result'],
    registers: [deps.metrics],
  });
  const kicks = new Counter({
    name: 'matrixrtc_membership_monitor_kicks_total',
    help: 'Participants the membership monitor removed from the SFU for not being joined, by result (removed, absent, failed)',
    labelNames: ['result'],
    registers: [deps.metrics],
  });
  const roomsDeleted = new Counter({
    name: 'matrixrtc_membership_monitor_rooms_deleted_total',
    help: 'SFU rooms deleted because our homeserver is no longer in their Matrix room',
    registers: [deps.metrics],
  });
  const tracked = new Gauge({
    name: 'matrixrtc_membership_monitor_participants',
    help: 'Participants the membership monitor watches, by state (pending, connected, left, kicked), as of the last sweep',
    labelNames: ['state'],
    registers: [deps.metrics],
  });
  let closed = false;
  let started = false;
  let sweepTimer: TimerHandle | undefined;
  /** The last sweep failed; its message (logged once per distinct error). */
  let failure: string | undefined;
  let sweeping: Promise<SweepReport> | undefined;
  let fullLogged = false;
  let misconfigurationLogged = false;

  /** Retry waits, ended early by close(). */
  const waits = new Set<() => void>();
  const sleep = (ms: number) =>
    new Promise<void>((resolve) => {
      const done = () => {
        waits.delete(done);
        clock.clearTimeout(timer);
        resolve();
      };
      const timer = clock.setTimeout(done, ms);
      waits.add(done);
    });
  const warnStore = (what: string, err: unknown) => logger.warn({ err: (err as Error).message }, `membership monitor: could not ${what} (store unreachable?)`);

  async function put(entry: MonitoredParticipant): Promise<void> {
    if (await store.put(entry)) return;
    if (!fullLogged) {
      fullLogged = true;
      logger.warn('membership monitor full: new tokens are issued but not watched until older entries expire');
    }
  }

  /** UpdateParticipant (no permissions) then RemoveParticipant with revocation, retried; NotFound = done. */
  async function removeFromSfu(e: MonitoredParticipant): Promise<'removed' | 'absent' | 'failed'> {
    const deadline = clock.now() + KICK_RETRY_MS;
    const nextDelay = createBackoff(random);
    for (;;) {
      try {
        if ((await sfu.revokePermissions(e.room, e.identity)) === 'absent') return 'absent';
        return await sfu.removeParticipant(e.room, e.identity, { revokeTokensIssuedBy: clock.now() });
      } catch (err) {
        if (isNotFound(err)) return 'absent';
        const delay = nextDelay();
        if (closed || clock.now() + delay > deadline) {
          logger.warn({ room: e.room, err: (err as Error).message }, 'membership monitor: could not remove a participant who left the Matrix room');
          return 'failed';
        }
        await sleep(delay);
        if (closed) return 'failed';
      }
    }
  }

  async function kick(e: MonitoredParticipant): Promise<boolean> {
    if (closed) return false;
    // Another replica kicking the same participant right now holds this lease.
    const kickLease = `kick:${jobField(e.room, e.identity)}`;
    if (!(await store.claim(kickLease, replicaId, KICK_RETRY_MS))) return false;
    // Kicked before the removal, so the participant_left it causes finds the entry kicked.
    await put({ ...e, kicked: true, changedAt: clock.now() });
    try {
      await deps.stopDelayedLeave(e.room, e.identity);
    } catch (err) {
      logger.warn({ room: e.room, err: (err as Error).message }, 'membership monitor: could not stop the delegated leave of a removed participant');
    }
    let result: Awaited<ReturnType<typeof removeFromSfu>>;
    try {
      result = await removeFromSfu(e);
    } finally {
      // Only concurrent kicks are excluded: a reconnect seen by any replica is removed again at once.
      await store.release(kickLease, replicaId).catch(() => undefined);
    }
    kicks.inc({ result });
    if (result !== 'failed') {
      logger.info({ room: e.room, roomId: e.roomId, result }, 'removed a participant whose user is no longer joined to the Matrix room');
      const now = await store.get(e.room, e.identity);
      if (now?.kicked) await put({ ...now, presence: 'left', changedAt: clock.now() });
    }
    return true;
  }

  /** One Matrix room: who is joined, then kicks / clears kicks of its connected entries. */
  async function checkRoom(roomId: string, entries: MonitoredParticipant[], allEntries: MonitoredParticipant[]): Promise<number> {
    let cs: string;
    try {
      cs = await deps.ownCsApi();
    } catch (err) {
      queries.inc({ result: 'unresolvable' });
      logger.warn({ err: (err as Error).message }, 'membership monitor: our homeserver`s client-server API is unresolvable; nobody removed');
      return 0;
    }
    let joined: Set<string>;
    try {
      joined = await homeserver.joinedMembers(cs, deps.asToken, roomId);
      queries.inc({ result: 'ok' });
    } catch (err) {
      if (err instanceof HomeserverError && err.status === 403) {
        queries.inc({ result: 'refused' });
        await onRefused(cs, roomId, allEntries);
        return 0;
      }
      queries.inc({ result: 'failed' });
      logger.warn({ roomId, err: (err as Error).message }, 'membership monitor: joined_members failed; nobody removed from this room');
      return 0;
    }
    let kicked = 0;
    for (const e of entries) {
      if (closed) break;
      if (joined.has(e.userId)) {
        if (e.kicked) {
          logger.info({ room: e.room }, 'a removed participant is joined to the Matrix room again; it stays');
          await put({ ...e, kicked: false, changedAt: clock.now() });
        }
      } else if (await kick(e)) kicked++;
    }
    return kicked;
  }

  /** joined_members 403: is our server still in the room at all? */
  async function onRefused(cs: string, roomId: string, allEntries: MonitoredParticipant[]): Promise<void> {
    let ours: boolean;
    try {
      ours = await homeserver.isJoined(cs, deps.asToken, roomId, { serverName: deps.serverName });
    } catch (err) {
      logger.warn({ roomId, err: (err as Error).message }, 'membership monitor: joined_members refused and is_joined failed; nobody removed');
      return;
    }
    if (ours) {
      const text = 'membership monitor: the homeserver refuses joined_members although our server is in the room: the registration`s users namespace must cover this server`s users (logged once; nobody is removed from such rooms)';
      if (misconfigurationLogged) logger.debug({ roomId }, text);
      else logger.warn({ roomId }, text);
      misconfigurationLogged = true;
      return;
    }
    const rooms = [...new Set(allEntries.filter((e) => e.roomId === roomId).map((e) => e.room))];
    logger.info({ roomId, sfuRooms: rooms.length }, 'our homeserver is no longer in the Matrix room: deleting its SFU rooms');
    for (const room of rooms) {
      try {
        await sfu.deleteRoom(room);
        roomsDeleted.inc();
      } catch (err) {
        logger.warn({ err: (err as Error).message }, 'membership monitor: could not delete an SFU room');
        continue;
      }
      await forgetRoom(room);
    }
  }

  async function forgetRoom(room: string): Promise<void> {
    for (const e of await store.all()) if (e.room === room) await store.delete(e.room, e.identity);
  }

  async function sweepOnce(): Promise<SweepReport> {
    // Renewed each interval by the sweeper; a sibling takes over when it lapses.
    if (!(await store.claim('sweep', replicaId, Math.round(deps.intervalMs * 1.5)))) {
      sweeps.inc({ result: 'skipped' });
      return { swept: false, kicked: 0 };
    }
    const now = clock.now();
    const live: MonitoredParticipant[] = [];
    for (const e of await store.all()) {
      if (e.presence !== 'connected' && e.changedAt + ENTRY_TTL_MS <= now) await store.delete(e.room, e.identity);
      else live.push(e);
    }
    // Presence the webhooks did not tell us (a webhook lost, or the SFU's webhook.urls unset).
    const byRoom = groupBy(live, (e) => e.room);
    await eachLimited([...byRoom], SWEEP_PARALLELISM, async ([room, entries]) => {
      let present: Set<string>;
      try {
        present = new Set((await sfu.listParticipants(room)).map((p) => p.identity));
      } catch (err) {
        logger.debug({ room, err: (err as Error).message }, 'membership monitor: ListParticipants failed; using the webhooks` view');
        return;
      }
      for (const e of entries) {
        const presence = present.has(e.identity) ? 'connected' : e.presence === 'connected' ? 'left' : e.presence;
        if (presence === e.presence) continue;
        e.presence = presence;
        if (presence === 'left') e.changedAt = clock.now();
        await put(e);
      }
    });
    const byMatrixRoom = groupBy(
      live.filter((e) => e.presence === 'connected'),
      (e) => e.roomId,
    );
    let kicked = 0;
    await eachLimited([...byMatrixRoom], SWEEP_PARALLELISM, async ([roomId, entries]) => {
      if (closed) return;
      const n = await checkRoom(roomId, entries, live);
      kicked += n;
    });
    const counts = { pending: 0, connected: 0, left: 0, kicked: 0 };
    for (const e of live) counts[e.kicked ? 'kicked' : e.presence]++;
    for (const [state, n] of Object.entries(counts)) tracked.set({ state }, n);
    sweeps.inc({ result: 'done' });
    return { swept: true, kicked };
  }

  const monitor: MembershipMonitor = {
    async register(r) {
      if (closed) return;
      try {
        const old = await store.get(r.room, r.identity);
        // Issued only to a member: a kick is over; a connected participant (token refresh) stays so.
        await put({ ...r, presence: old?.presence ?? 'pending', kicked: false, changedAt: clock.now() });
      } catch (err) {
        warnStore('remember a token it issued', err);
      }
    },

    async onSfuEvent(room, identity, event) {
      if (closed) return;
      try {
        const e = await store.get(room, identity);
        if (!e) return;
        if (event === 'joined') {
          await put({ ...e, presence: 'connected' });
          // A removed participant came back (a token the SFU did not revoke): check it now.
          if (e.kicked) await checkRoom(e.roomId, [{ ...e, presence: 'connected' }], [e]);
        } else await put({ ...e, presence: 'left', changedAt: clock.now() });
      } catch (err) {
        warnStore('apply an SFU webhook', err);
      }
    },

    async onRoomFinished(room) {
      if (closed) return;
      try {
        await forgetRoom(room);
      } catch (err) {
        warnStore('forget a finished room', err);
      }
    },

    sweep() {
      if (closed) return Promise.resolve({ swept: false, kicked: 0 });
      sweeping ??= sweepOnce()
        .then((report) => {
          if (failure !== undefined) logger.info('membership monitor sweeping again');
          failure = undefined;
          return report;
        })
        .catch((err: unknown) => {
          sweeps.inc({ result: 'failed' });
          const message = (err as Error).message;
          if (message !== failure) logger.warn({ err: message }, 'membership monitor sweep failed; nobody removed (retried every second, repeats not logged)');
          failure = message;
          return { swept: false, kicked: 0 };
        })
        .finally(() => (sweeping = undefined));
      return sweeping;
    },

    start() {
      if (closed || started) return;
      started = true;
      // Each sweep scheduled after the last one ended; soon again after a failure, so a store
      // (Redis) outage costs its own length and a second, not an interval on top.
      const schedule = () => {
        if (closed) return;
        const delay = failure === undefined ? deps.intervalMs : Math.min(deps.intervalMs, RETRY_AFTER_FAILURE_MS);
        sweepTimer = clock.setTimeout(() => {
          sweepTimer = undefined;
          void monitor.sweep().finally(schedule);
        }, delay);
      };
      schedule();
    },

    async close() {
      if (closed) return;
      closed = true;
      clock.clearTimeout(sweepTimer);
      for (const done of waits) done(); // each removes itself, which a Set's iteration allows
      await sweeping;
      // A sibling sweeps from its next tick, not after the lease runs out.
      await store.release('sweep', replicaId).catch(() => undefined);
      await store.close();
    },
  };
  return monitor;
}
