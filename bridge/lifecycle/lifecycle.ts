/**
 * SFU room lifecycle: listens to the membership tracker and keeps the SFU in step. The first
 * membership of a call creates its SFU room (named with the token service's alias hash); a
 * membership that ends removes the participant the token service issued to that device: one
 * ListParticipants says which of the identities it may have issued is present, and only those
 * are removed (one RemoveParticipant each); when the user lost the room (kick, ban, leave) the
 * removal also revokes (`revoke_token_ts`), so a still-valid token or refresh cannot rejoin, and
 * the user's `/sfu/get` participants without a call membership go from the room's call too.
 * When a call's last membership ends, the SFU room is deleted after `room_delete_grace_seconds`
 * (the SFU room's own departure timeout is the same) unless someone rejoins first, and its
 * binding is forgotten. Deletion deadlines live in the store (a restarted replica re-arms them at
 * start, a sibling at its next reconcile) and timers run on the injected clock.
 * Lifecycle: create, `start()` re-arms pending deletions, `stop()` clears timers. `joined` and
 * `left` are called by the tracker inside the room's queue; SFU failures are logged and counted
 * (reconcile repairs them later), never thrown back at the homeserver.
 */
import type { Clock, TimerHandle } from '../../common/clock.ts';
import type { Logger } from '../../common/logger.ts';
import type { BridgeMetrics } from '../appservice/metrics.ts';
import { ROOM_LOSS_REASONS, type MembershipEnded, type MembershipListener } from '../membership/tracker.ts';
import type { BridgeStore, CallMembership } from '../store/store.ts';
import {
  LEGACY_SLOT_ID,
  liveKitIdentityForMember,
  legacyLiveKitIdentity,
  liveKitIdentityForMemberId,
  liveKitRoomAlias,
  type LiveKitIdentity,
  type LiveKitRoomName,
} from '../token/names.ts';
import type { SfuRoomService } from '../sfu/room-service.ts';

/**
 * Every identity the token service may have issued to this device: `<mxid>:<device>` from
 * `/sfu/get`, and the hashes from `/get_token` (AS line A) and AS line B when a member id is known.
 */
export function identitiesFor(m: { userId: string; deviceId?: string; memberId?: string }): LiveKitIdentity[] {
  const out: LiveKitIdentity[] = [];
  if (m.deviceId) out.push(legacyLiveKitIdentity(m.userId, m.deviceId));
  if (m.memberId) {
    if (m.deviceId) out.push(liveKitIdentityForMember(m.userId, m.deviceId, m.memberId));
    out.push(liveKitIdentityForMemberId(m.userId, m.memberId));
  }
  return out;
}

/** The mxid inside a `/sfu/get` identity (`<mxid>:<device>`), or undefined for hashed ones. */
export function userOfLegacyIdentity(identity: string): string | undefined {
  const m = /^(@[^:]+:.+):([^:]+)$/.exec(identity);
  return m ? m[1] : undefined;
}

export function sfuRoomOf(m: { roomId: string; slotId?: string }): LiveKitRoomName {
  return liveKitRoomAlias(m.roomId, m.slotId ?? LEGACY_SLOT_ID);
}

export interface RoomLifecycle extends MembershipListener {
  start(): Promise<void>;
  stop(): void;
  /** Schedules deletion of an SFU room whose call has no membership left (used by reconcile too). */
  scheduleDelete(name: string, roomId: string | undefined): Promise<void>;
  /** Arms timers for stored deletions this process has none for (a sibling's; reconcile calls it). */
  resumeDeletions(): Promise<void>;
}

export interface RoomLifecycleDeps {
  store: BridgeStore;
  sfu: SfuRoomService;
  clock: Clock;
  logger: Logger;
  metrics: BridgeMetrics;
  graceSeconds: number;
  /** The tracker's per-room queue, so a deletion never races a join in the same room. */
  inRoom<T>(roomId: string, fn: () => Promise<T>): Promise<T>;
}

export function createRoomLifecycle(deps: RoomLifecycleDeps): RoomLifecycle {
  const { store, sfu, clock, logger, metrics } = deps;
  const timers = new Map<string, TimerHandle>();
  let stopped = false;

  async function sfuCall<T>(op: string, fn: () => Promise<T>): Promise<T | undefined> {
    try {
      const r = await fn();
      metrics.sfuCalls.inc({ op, outcome: 'ok' });
      return r;
    } catch (err) {
      metrics.sfuCalls.inc({ op, outcome: 'error' });
      logger.error({ err: (err as Error).message, op }, 'SFU RoomService call failed');
      return undefined;
    }
  }

  function cancelTimer(name: string): void {
    clock.clearTimeout(timers.get(name));
    timers.delete(name);
  }

  function armTimer(name: string, at: number): void {
    cancelTimer(name);
    if (stopped) return;
    timers.set(
      name,
      clock.setTimeout(() => {
        timers.delete(name);
        void fireDelete(name).catch((err: unknown) => logger.error({ err }, 'SFU room deletion failed'));
      }, at - clock.now()),
    );
  }

  /** Whether any tracked membership (in the bound room, or anywhere when unbound) uses this SFU room. */
  async function hasMemberships(name: string, roomId: string | undefined): Promise<boolean> {
    const rooms = roomId ? [roomId] : await store.listCallRooms();
    for (const r of rooms) {
      if ((await store.listMemberships(r)).some((m) => sfuRoomOf(m) === name)) return true;
    }
    return false;
  }

  async function scheduleDelete(name: string, roomId: string | undefined): Promise<void> {
    if (roomId && !(await store.lookupSfuRoom(name))) await store.bindSfuRoom(name, { roomId, slotId: LEGACY_SLOT_ID });
    const existing = (await store.listRoomDeletions()).get(name);
    const at = existing ?? clock.now() + deps.graceSeconds * 1000;
    if (existing === undefined) await store.setRoomDeleteAt(name, at);
    armTimer(name, at);
  }

  async function fireDelete(name: string): Promise<void> {
    const at = (await store.listRoomDeletions()).get(name);
    if (at === undefined) return;
    if (at > clock.now()) return armTimer(name, at);
    const binding = await store.lookupSfuRoom(name);
    const run = async () => {
      if (await hasMemberships(name, binding?.roomId)) {
        await store.clearRoomDeleteAt(name);
        return;
      }
      const r = await sfuCall('delete_room', () => sfu.deleteRoom(name));
      if (r === undefined) {
        // SFU unreachable: try again after another grace period.
        const next = clock.now() + deps.graceSeconds * 1000;
        await store.setRoomDeleteAt(name, next);
        armTimer(name, next);
        return;
      }
      await store.clearRoomDeleteAt(name);
      await store.unbindSfuRoom(name);
      logger.info({ sfuRoom: name, result: r }, 'deleted SFU room after its call ended');
    };
    if (binding) await deps.inRoom(binding.roomId, run);
    else await run();
  }

  /**
   * Removes those of `candidates` the SFU room has (one ListParticipants, one RemoveParticipant
   * each), revoking their tokens when asked; `onFirst` runs right after the first removal.
   */
  async function removePresent(name: string, candidates: (ids: string[]) => string[], revoke: boolean, onFirst: () => void): Promise<number> {
    const present = await sfuCall('list_participants', () => sfu.listParticipants(name));
    // SFU unreachable: logged and counted by sfuCall; reconcile removes the participant later.
    if (present === undefined) return 0;
    let removed = 0;
    for (const identity of candidates(present.map((p) => p.identity))) {
      const opts = revoke ? { revokeTokensIssuedBy: clock.now() } : {};
      const r = await sfuCall('remove_participant', () => sfu.removeParticipant(name, identity, opts));
      if (r === 'removed' && removed++ === 0) onFirst();
    }
    return removed;
  }

  /** Removes the device's present identities. */
  async function removeFromSfu(name: string, device: { userId: string; deviceId?: string; memberId?: string }, e: MembershipEnded): Promise<void> {
    const ids = identitiesFor(device);
    if (ids.length === 0) return;
    const revoke = ROOM_LOSS_REASONS.has(e.reason);
    const removed = await removePresent(name, (present) => ids.filter((id) => present.includes(id)), revoke, () =>
      metrics.leaveToRemoval.observe(Math.max(0, clock.now() - e.at) / 1000),
    );
    logger.info({ sfuRoom: name, reason: e.reason, removed, revoked: revoke && removed > 0 }, 'call membership ended');
  }

  return {
    async start() {
      stopped = false;
      for (const [name, at] of await store.listRoomDeletions()) armTimer(name, at);
    },
    stop() {
      stopped = true;
      for (const h of timers.values()) clock.clearTimeout(h);
      timers.clear();
    },
    async joined(m: CallMembership) {
      const name = sfuRoomOf(m);
      await store.bindSfuRoom(name, { roomId: m.roomId, slotId: m.slotId });
      if ((await store.listRoomDeletions()).has(name)) {
        await store.clearRoomDeleteAt(name);
        logger.info({ sfuRoom: name }, 'rejoin inside the grace period keeps the SFU room');
      }
      cancelTimer(name);
      await sfuCall('create_room', () => sfu.createRoom(name));
    },
    async left(e: MembershipEnded) {
      const source = e.membership ?? { ...e.ended, slotId: LEGACY_SLOT_ID, memberId: '' };
      const name = sfuRoomOf({ roomId: e.roomId, slotId: source.slotId });
      const remaining = await store.listMemberships(e.roomId);
      const sameDeviceStays = remaining.some(
        (r) => sfuRoomOf(r) === name && r.userId === e.userId && r.deviceId === source.deviceId,
      );
      if (!sameDeviceStays) await removeFromSfu(name, source, e);
      if (!remaining.some((r) => sfuRoomOf(r) === name)) await scheduleDelete(name, e.roomId);
    },
    async roomLost(roomId, userId, reason) {
      // A participant with no call membership (a token used without announcing it) still goes, by
      // its `/sfu/get` identity, from the room's call SFU room if that exists.
      const name = sfuRoomOf({ roomId });
      if (!(await store.lookupSfuRoom(name))) return;
      const removed = await removePresent(name, (present) => present.filter((id) => userOfLegacyIdentity(id) === userId), true, () => undefined);
      if (removed > 0) logger.info({ sfuRoom: name, reason, removed, revoked: true }, 'removed participants of a user who lost the room');
    },
    scheduleDelete,
    async resumeDeletions() {
      if (stopped) return;
      for (const [name, at] of await store.listRoomDeletions()) if (!timers.has(name)) armTimer(name, at);
    },
  };
}
