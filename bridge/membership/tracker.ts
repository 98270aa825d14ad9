/**
 * The membership tracker: applies interpreted events to the store, one room at a time and in
 * order, and tells its listener (the SFU room lifecycle) when a device joined or left a call.
 * It also owns time: one expiry timer per tracked membership and one timer per pending leave, on
 * the injected clock, and the `adopt` / `drop` entry points reconcile uses to repair drift.
 * How a membership ends decides how fast: losing the room (kick, ban, leave) and expiry end it at
 * once; a plain `{}` call leave waits `leaveGraceMs` counted from its origin_server_ts (so a leave
 * seen late, after downtime, acts at once) and is cancelled when the same key's membership comes
 * back meanwhile, which is what Element Call does after a spurious delayed-leave firing. Pending
 * leaves live in the store (a restarted or sibling replica finishes them; taking one is atomic, so
 * one replica acts). Events are applied in origin_server_ts order per key: a join or leave older
 * than the latest one applied to that key (a re-sent old event) is ignored; the latest leave's
 * time is remembered for a while for that.
 * Lifecycle: `createMembershipTracker`, then `start()` (re-arms timers from the store), then
 * `applyEvents` from the appservice edge and `adopt`/`drop` from reconcile; `stop()` clears
 * timers. Listener failures are logged and counted, never thrown into the transaction.
 */
import type { Clock, TimerHandle } from '../../common/clock.ts';
import type { Logger } from '../../common/logger.ts';
import type { BridgeStore, CallMembership, PendingLeave } from '../store/store.ts';
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
  /** The user lost the room (after `left` for each of their memberships): their other participants go too. */
  roomLost(roomId: string, userId: string, reason: 'room_leave' | 'ban'): Promise<void>;
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
  /**
   * Reconcile: end a tracked membership the homeserver no longer has (call inside `inRoom`).
   * `loss` says the user is no longer joined (their `m.room.member` event's reason and time): the
   * membership then ends as on a kick. Otherwise a membership whose leave is waiting for its grace
   * is left to it. Resolves whether it ended one.
   */
  drop(roomId: string, key: string, loss?: { reason: 'room_leave' | 'ban'; at: number }): Promise<boolean>;
  setListener(l: MembershipListener): void;
  /**
   * Arms a timer for every pending leave in the store, also those a sibling replica stored and
   * can no longer finish (reconcile calls it each pass). Taking a leave is atomic, so a leave
   * armed in two replicas is acted on once.
   */
  resumePendingLeaves(): Promise<void>;
}

export interface MembershipTrackerDeps {
  store: BridgeStore;
  clock: Clock;
  logger: Logger;
  metrics: BridgeMetrics;
  /** How long a plain `{}` call leave waits, from its origin_server_ts; 0 = at once. */
  leaveGraceMs: number;
  /** The least time a key's latest leave is remembered (the transaction-id TTL). */
  rememberLeavesMs: number;
}

/** The longest a key's latest leave is remembered (memberships are capped at 24 h anyway). */
export const MAX_REMEMBER_LEAVE_MS = 24 * 60 * 60 * 1000;

const timerKey = (roomId: string, key: string) => `${roomId}\u0000${key}`;

/** Leaves that say where the user stands in the room: the SFU removal also revokes the token. */
export const ROOM_LOSS_REASONS: ReadonlySet<LeaveReason> = new Set(['room_leave', 'ban']);

export function createMembershipTracker(deps: MembershipTrackerDeps): MembershipTracker {
  const { store, clock, logger, metrics } = deps;
  const queue = createRoomQueue();
  const timers = new Map<string, TimerHandle>();
  const leaveTimers = new Map<string, TimerHandle>();
  let listener: MembershipListener | undefined;
  let stopped = false;

  const tracked = async (roomId: string, key: string) => (await store.listMemberships(roomId)).find((x) => x.key === key);

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

  function cancelLeaveTimer(roomId: string, key: string): void {
    const k = timerKey(roomId, key);
    clock.clearTimeout(leaveTimers.get(k));
    leaveTimers.delete(k);
  }

  function armLeave(p: PendingLeave): void {
    cancelLeaveTimer(p.roomId, p.key);
    if (stopped) return;
    const k = timerKey(p.roomId, p.key);
    leaveTimers.set(
      k,
      clock.setTimeout(() => {
        leaveTimers.delete(k);
        void queue
          .run(p.roomId, () => leaveGraceEnded(p.roomId, p.key))
          .catch((err: unknown) => logger.error({ err, roomId: p.roomId }, 'graced call leave failed'));
      }, p.due - clock.now()),
    );
  }

  /** Drops a pending leave of the key, if any (the membership came back or ended otherwise). */
  async function cancelPendingLeave(roomId: string, key: string): Promise<PendingLeave | undefined> {
    cancelLeaveTimer(roomId, key);
    return await store.takePendingLeave(roomId, key);
  }

  /** Remembers the latest leave of a key, until the membership it ended could have expired (capped). */
  async function rememberLeave(roomId: string, key: string, at: number, endedExpiresAt: number | undefined): Promise<void> {
    const known = await store.getLeftAt(roomId, key);
    if (known !== undefined && known >= at) return;
    const ttl = Math.min(MAX_REMEMBER_LEAVE_MS, Math.max(deps.rememberLeavesMs, (endedExpiresAt ?? 0) - clock.now()));
    await store.setLeftAt(roomId, key, at, ttl);
  }

  /** Whether an event of this key at `ts` is older than the latest join or leave applied to it. */
  async function isStale(roomId: string, key: string, ts: number, current: CallMembership | undefined): Promise<boolean> {
    if (current && ts < current.originServerTs) return true;
    const leftAt = await store.getLeftAt(roomId, key);
    return leftAt !== undefined && ts < leftAt;
  }

  function ignoreStale(roomId: string, key: string, what: string): void {
    metrics.events.inc({ kind: 'stale' });
    logger.info({ roomId, key }, `ignored a call ${what} older than the latest one applied to its membership (a re-sent old event)`);
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
    await cancelPendingLeave(m.roomId, m.key);
    await store.removeMembership(m.roomId, m.key);
    // Expiry and reconcile are the bridge's own times, not an event's: nothing to order against.
    if (reason !== 'expired' && reason !== 'reconcile') await rememberLeave(m.roomId, m.key, at, m.expiresAt);
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
    const m = await tracked(roomId, key);
    if (!m) return;
    if (m.expiresAt > clock.now()) {
      armExpiry(m);
      return;
    }
    metrics.events.inc({ kind: 'expiry' });
    await end(m, 'expired', m.expiresAt);
  }

  async function join(m: CallMembership): Promise<void> {
    const existing = await tracked(m.roomId, m.key);
    if (await isStale(m.roomId, m.key, m.originServerTs, existing)) return ignoreStale(m.roomId, m.key, 'join');
    if (m.expiresAt <= clock.now()) {
      // Already over (a late retry, or a stale membership): treat as its leave.
      await end(existing ?? m, 'expired', m.expiresAt);
      return;
    }
    if (await cancelPendingLeave(m.roomId, m.key)) {
      metrics.leaveGrace.inc({ outcome: 'cancelled' });
      logger.info({ roomId: m.roomId, userId: m.userId }, 'call membership came back within the leave grace; the participant stays');
    }
    await store.putMembership(m);
    armExpiry(m);
    await notifyJoined(m);
  }

  /** Ends a `{}` leave: forgets the membership and tells the lifecycle. */
  async function applyLeave(p: Omit<PendingLeave, 'due'>, reason: LeaveReason): Promise<void> {
    const m = await store.removeMembership(p.roomId, p.key);
    cancelExpiry(p.roomId, p.key);
    await notifyLeft({
      roomId: p.roomId,
      userId: p.userId,
      membership: m ?? p.prev,
      ended: { roomId: p.roomId, key: p.key, userId: p.userId, deviceId: p.deviceId, prev: p.prev },
      reason,
      at: p.at,
    });
  }

  async function leave(ended: EndedMembership, at: number): Promise<void> {
    const current = await tracked(ended.roomId, ended.key);
    if (await isStale(ended.roomId, ended.key, at, current)) return ignoreStale(ended.roomId, ended.key, 'leave');
    await rememberLeave(ended.roomId, ended.key, at, current?.expiresAt ?? ended.prev?.expiresAt);
    const p: PendingLeave = { roomId: ended.roomId, key: ended.key, userId: ended.userId, at, due: at + deps.leaveGraceMs };
    if (ended.deviceId !== undefined) p.deviceId = ended.deviceId;
    if (ended.prev) p.prev = ended.prev;
    if (deps.leaveGraceMs > 0 && p.due > clock.now()) {
      metrics.leaveGrace.inc({ outcome: 'waiting' });
      await store.setPendingLeave(p);
      armLeave(p);
      logger.info({ roomId: p.roomId, userId: p.userId, graceMs: p.due - clock.now() }, 'call leave waits for its grace before the participant is removed');
      return;
    }
    if (deps.leaveGraceMs > 0) metrics.leaveGrace.inc({ outcome: 'late' });
    await cancelPendingLeave(p.roomId, p.key);
    await applyLeave(p, 'leave');
  }

  async function leaveGraceEnded(roomId: string, key: string): Promise<void> {
    const p = await store.takePendingLeave(roomId, key);
    if (!p) return; // cancelled, or a sibling replica took it
    if (p.due > clock.now()) {
      await store.setPendingLeave(p);
      armLeave(p);
      return;
    }
    metrics.leaveGrace.inc({ outcome: 'removed' });
    await applyLeave(p, 'leave');
  }

  /** Kick, ban or leaving the room: every call membership of the user ends now, graced or not. */
  async function roomLoss(roomId: string, userId: string, reason: 'room_leave' | 'ban', at: number): Promise<void> {
    for (const m of await store.listMemberships(roomId)) {
      if (m.userId === userId) await end(m, reason, at);
    }
    for (const p of await store.listPendingLeaves()) {
      if (p.roomId !== roomId || p.userId !== userId) continue;
      const taken = await cancelPendingLeave(roomId, p.key);
      if (taken) await applyLeave({ ...taken, at }, reason);
    }
    if (!listener) return;
    try {
      await listener.roomLost(roomId, userId, reason);
    } catch (err) {
      metrics.listenerErrors.inc();
      logger.error({ err, roomId }, 'lifecycle failed to handle a room leave');
    }
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
        if (i.membership === 'leave' || i.membership === 'ban') await roomLoss(i.roomId, i.userId, i.membership === 'ban' ? 'ban' : 'room_leave', at);
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
      for (const p of await store.listPendingLeaves()) armLeave(p);
    },
    stop() {
      stopped = true;
      for (const h of [...timers.values(), ...leaveTimers.values()]) clock.clearTimeout(h);
      timers.clear();
      leaveTimers.clear();
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
    async drop(roomId, key, loss) {
      if (!loss && (await store.listPendingLeaves()).some((p) => p.roomId === roomId && p.key === key)) return false;
      const m = await tracked(roomId, key);
      if (!m) return false;
      await end(m, loss?.reason ?? 'reconcile', loss?.at ?? clock.now());
      return true;
    },
    setListener(l) {
      listener = l;
    },
    async resumePendingLeaves() {
      if (stopped) return;
      for (const p of await store.listPendingLeaves()) if (!leaveTimers.has(timerKey(p.roomId, p.key))) armLeave(p);
    },
  };
}
