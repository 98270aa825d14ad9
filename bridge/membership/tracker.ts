/**
 * The membership tracker: applies interpreted events to the store, one room at a time and in
 * order, and tells its listener (the SFU room lifecycle) when a device joined or left a call.
 * It also owns expiry: one timer per tracked membership on the injected clock, and the `adopt`
 * / `drop` entry points reconcile uses to repair drift. Lifecycle: `createMembershipTracker`,
 * then `start()` (re-arms expiry timers from the store), then `applyEvents` from the appservice
 * edge and `adopt`/`drop` from reconcile; `stop()` clears timers. Listener failures are logged
 * and counted, never thrown into the transaction.
 */
import type { Clock, TimerHandle } from '../../common/clock.ts';
import type { Logger } from '../../common/logger.ts';
import type { BridgeStore, CallMembership } from '../store/store.ts';
import type { BridgeMetrics } from '../appservice/metrics.ts';
import { interpretEvent, type EndedMembership, type Interpretation } from './parse.ts';
import { createRoomQueue, type RoomQueue } from './room-queue.ts';

export type LeaveReason = 'leave' | 'expired' | 'room_leave' | 'ban' | 'redacted' | 'reconcile';

export interface MembershipEnded {
  roomId: string;
  userId: string;
  /** The tracked membership, or what the event told when nothing was tracked. */
  membership: CallMembership | undefined;
  ended: EndedMembership;
  reason: LeaveReason;
  /** Epoch ms the leave happened (event origin_server_ts, or now for expiry). */
  at: number;
}

export interface MembershipListener {
  joined(m: CallMembership): Promise<void>;
  left(e: MembershipEnded): Promise<void>;
}

export interface MembershipTracker {
  readonly queue: RoomQueue;
  start(): Promise<void>;
  stop(): void;
  /** Applies a transaction's events in order. Each bad event is logged and skipped. */
  applyEvents(events: unknown[]): Promise<void>;
  /** Reconcile: runs `fn` with exclusive access to the room. */
  inRoom<T>(roomId: string, fn: () => Promise<T>): Promise<T>;
  /** Reconcile: track a membership found in homeserver state (call inside `inRoom`). */
  adopt(m: CallMembership): Promise<void>;
  /** Reconcile: end a tracked membership the homeserver no longer has (call inside `inRoom`). */
  drop(roomId: string, key: string): Promise<void>;
  setListener(l: MembershipListener): void;
}

export interface MembershipTrackerDeps {
  store: BridgeStore;
  clock: Clock;
  logger: Logger;
  metrics: BridgeMetrics;
}

const timerKey = (roomId: string, key: string) => `${roomId}\u0000${key}`;

export function createMembershipTracker(deps: MembershipTrackerDeps): MembershipTracker {
  const { store, clock, logger, metrics } = deps;
  const queue = createRoomQueue();
  const timers = new Map<string, TimerHandle>();
  let listener: MembershipListener | undefined;
  let stopped = false;

  function cancelExpiry(roomId: string, key: string): void {
    const k = timerKey(roomId, key);
    clock.clearTimeout(timers.get(k));
    timers.delete(k);
  }

  function armExpiry(m: CallMembership): void {
    cancelExpiry(m.roomId, m.key);
    if (stopped) return;
    const k = timerKey(m.roomId, m.key);
    const handle = clock.setTimeout(() => {
      timers.delete(k);
      void queue
        .run(m.roomId, () => expire(m.roomId, m.key))
        .catch((err: unknown) => logger.error({ err, roomId: m.roomId }, 'membership expiry failed'));
    }, m.expiresAt - clock.now());
    timers.set(k, handle);
  }

  async function notifyJoined(m: CallMembership): Promise<void> {
    if (!listener) return;
    try {
      await listener.joined(m);
    } catch (err) {
      metrics.listenerErrors.inc();
      logger.error({ err, roomId: m.roomId }, 'lifecycle failed to handle a join');
    }
  }

  async function notifyLeft(e: MembershipEnded): Promise<void> {
    if (!listener) return;
    try {
      await listener.left(e);
    } catch (err) {
      metrics.listenerErrors.inc();
      logger.error({ err, roomId: e.roomId }, 'lifecycle failed to handle a leave');
    }
  }

  async function end(m: CallMembership, reason: LeaveReason, at: number): Promise<void> {
    cancelExpiry(m.roomId, m.key);
    await store.removeMembership(m.roomId, m.key);
    await notifyLeft({
      roomId: m.roomId,
      userId: m.userId,
      membership: m,
      ended: { roomId: m.roomId, key: m.key, userId: m.userId, deviceId: m.deviceId },
      reason,
      at,
    });
  }

  async function expire(roomId: string, key: string): Promise<void> {
    const m = (await store.listMemberships(roomId)).find((x) => x.key === key);
    if (!m) return;
    if (m.expiresAt > clock.now()) {
      armExpiry(m);
      return;
    }
    metrics.events.inc({ kind: 'expiry' });
    await end(m, 'expired', m.expiresAt);
  }

  async function join(m: CallMembership): Promise<void> {
    if (m.expiresAt <= clock.now()) {
      // Already over (a late retry, or a stale membership): treat as its leave.
      const existing = (await store.listMemberships(m.roomId)).find((x) => x.key === m.key);
      await end(existing ?? m, 'expired', m.expiresAt);
      return;
    }
    await store.putMembership(m);
    armExpiry(m);
    await notifyJoined(m);
  }

  async function leave(ended: EndedMembership, at: number): Promise<void> {
    const tracked = await store.removeMembership(ended.roomId, ended.key);
    cancelExpiry(ended.roomId, ended.key);
    await notifyLeft({ roomId: ended.roomId, userId: ended.userId, membership: tracked ?? ended.prev, ended, reason: 'leave', at });
  }

  async function apply(i: Interpretation, at: number): Promise<void> {
    switch (i.kind) {
      case 'join':
        metrics.events.inc({ kind: 'call_member_join' });
        return await join(i.membership);
      case 'leave':
        metrics.events.inc({ kind: 'call_member_leave' });
        return await leave(i.ended, at);
      case 'legacy_list': {
        metrics.events.inc({ kind: 'call_member_legacy' });
        const keep = new Set(i.memberships.map((m) => m.key));
        for (const old of await store.listMemberships(i.roomId)) {
          if (old.source === 'legacy' && old.userId === i.userId && !keep.has(old.key)) await end(old, 'leave', at);
        }
        for (const m of i.memberships) await join(m);
        return;
      }
      case 'room_member': {
        metrics.events.inc({ kind: 'room_member' });
        await store.setRoomMember(i.roomId, i.userId, i.membership);
        if (i.membership === 'leave' || i.membership === 'ban') {
          for (const m of await store.listMemberships(i.roomId)) {
            if (m.userId === i.userId) await end(m, i.membership === 'ban' ? 'ban' : 'room_leave', at);
          }
        }
        return;
      }
      case 'redaction': {
        metrics.events.inc({ kind: 'redaction' });
        for (const m of await store.listMemberships(i.roomId)) {
          if (m.eventId === i.redacts) await end(m, 'redacted', at);
        }
        return;
      }
      case 'forged':
        metrics.events.inc({ kind: 'forged' });
        metrics.forged.inc();
        logger.warn({ roomId: i.roomId, sender: i.sender, claimed: i.claimed }, 'ignored a call membership whose key names another user');
        return;
      case 'invalid':
        metrics.events.inc({ kind: 'invalid' });
        logger.warn({ reason: i.reason }, 'ignored an event the bridge cannot understand');
        return;
      case 'ignored':
        metrics.events.inc({ kind: 'other' });
        return;
    }
  }

  return {
    queue,
    async start() {
      stopped = false;
      for (const roomId of await store.listCallRooms()) {
        for (const m of await store.listMemberships(roomId)) armExpiry(m);
      }
    },
    stop() {
      stopped = true;
      for (const h of timers.values()) clock.clearTimeout(h);
      timers.clear();
    },
    async applyEvents(events) {
      for (const raw of events) {
        const i = interpretEvent(raw, clock.now());
        const roomId = 'roomId' in i ? i.roomId : i.kind === 'join' ? i.membership.roomId : i.kind === 'leave' ? i.ended.roomId : undefined;
        const at = typeof (raw as { origin_server_ts?: unknown })?.origin_server_ts === 'number'
          ? (raw as { origin_server_ts: number }).origin_server_ts
          : clock.now();
        try {
          if (roomId === undefined) await apply(i, at);
          else {
            await store.addKnownRoom(roomId);
            await queue.run(roomId, () => apply(i, at));
          }
        } catch (err) {
          // A store failure must fail the transaction (so the homeserver retries): rethrow.
          metrics.events.inc({ kind: 'failed' });
          throw err;
        }
      }
    },
    inRoom(roomId, fn) {
      return queue.run(roomId, fn);
    },
    async adopt(m) {
      await join(m);
    },
    async drop(roomId, key) {
      const m = (await store.listMemberships(roomId)).find((x) => x.key === key);
      if (m) await end(m, 'reconcile', clock.now());
    },
    setListener(l) {
      listener = l;
    },
  };
}
