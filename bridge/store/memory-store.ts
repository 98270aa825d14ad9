/**
 * In-memory `BridgeStore` for a single bridge process (and tests). Expiring records (transaction
 * ids and leases, latest-leave times) use the injected clock, so a test moves time forward
 * instead of sleeping; expired ones are swept at most every `SWEEP_INTERVAL_MS` by the next write,
 * so the maps stay bounded by what is live (Redis does the same with key TTLs). SFU room bindings
 * go when the room is deleted.
 */
import type { Clock } from '../../common/clock.ts';
import type { BridgeStore, CallMembership, PendingLeave, SfuRoomBinding } from './store.ts';

/** How often expired records are swept (on the next write after this long). */
export const SWEEP_INTERVAL_MS = 60_000;

export interface MemoryBridgeStore extends BridgeStore {
  /** Record counts, for tests and debugging: shows that nothing grows without bound. */
  sizes(): { txnDone: number; txnLocks: number; leftAt: number; sfuRooms: number; pendingLeaves: number };
}

const slot = (roomId: string, key: string) => `${roomId}\u0000${key}`;

export function createMemoryStore(deps: { clock: Clock }): MemoryBridgeStore {
  const { clock } = deps;
  const calls = new Map<string, Map<string, CallMembership>>();
  const members = new Map<string, Map<string, string>>();
  const known = new Set<string>();
  const sfuRooms = new Map<string, SfuRoomBinding>();
  const deletions = new Map<string, number>();
  const txnDone = new Map<string, number>();
  const txnLocks = new Map<string, number>();
  const pendingLeaves = new Map<string, PendingLeave>();
  /** slot -> [origin_server_ts of the latest leave, epoch ms it is forgotten] */
  const leftAt = new Map<string, [number, number]>();
  let nextSweep = clock.now() + SWEEP_INTERVAL_MS;

  function sweep(): void {
    const now = clock.now();
    if (now < nextSweep) return;
    nextSweep = now + SWEEP_INTERVAL_MS;
    for (const map of [txnDone, txnLocks]) for (const [k, until] of map) if (until <= now) map.delete(k);
    for (const [k, [, until]] of leftAt) if (until <= now) leftAt.delete(k);
  }

  const live = (map: Map<string, number>, key: string): boolean => {
    const until = map.get(key);
    if (until === undefined) return false;
    if (until <= clock.now()) {
      map.delete(key);
      return false;
    }
    return true;
  };

  return {
    async listMemberships(roomId) {
      return [...(calls.get(roomId)?.values() ?? [])].map((m) => ({ ...m }));
    },
    async listCallRooms() {
      return [...calls.keys()];
    },
    async putMembership(m) {
      let room = calls.get(m.roomId);
      if (!room) calls.set(m.roomId, (room = new Map()));
      room.set(m.key, { ...m });
      known.add(m.roomId);
    },
    async removeMembership(roomId, key) {
      const room = calls.get(roomId);
      const m = room?.get(key);
      if (!room || !m) return undefined;
      room.delete(key);
      if (room.size === 0) calls.delete(roomId);
      return m;
    },
    async setRoomMember(roomId, userId, membership) {
      let room = members.get(roomId);
      if (!room) members.set(roomId, (room = new Map()));
      room.set(userId, membership);
      known.add(roomId);
    },
    async getRoomMember(roomId, userId) {
      return members.get(roomId)?.get(userId);
    },
    async listKnownRooms() {
      return [...known];
    },
    async addKnownRoom(roomId) {
      known.add(roomId);
    },
    async bindSfuRoom(name, binding) {
      sfuRooms.set(name, { ...binding });
    },
    async lookupSfuRoom(name) {
      const b = sfuRooms.get(name);
      return b ? { ...b } : undefined;
    },
    async unbindSfuRoom(name) {
      sfuRooms.delete(name);
    },
    async setRoomDeleteAt(name, at) {
      deletions.set(name, at);
    },
    async clearRoomDeleteAt(name) {
      deletions.delete(name);
    },
    async listRoomDeletions() {
      return new Map(deletions);
    },
    async setPendingLeave(p) {
      pendingLeaves.set(slot(p.roomId, p.key), structuredClone(p));
    },
    async takePendingLeave(roomId, key) {
      const p = pendingLeaves.get(slot(roomId, key));
      pendingLeaves.delete(slot(roomId, key));
      return p;
    },
    async listPendingLeaves() {
      return [...pendingLeaves.values()].map((p) => structuredClone(p));
    },
    async setLeftAt(roomId, key, at, ttlMs) {
      sweep();
      leftAt.set(slot(roomId, key), [at, clock.now() + ttlMs]);
    },
    async getLeftAt(roomId, key) {
      const entry = leftAt.get(slot(roomId, key));
      return entry && entry[1] > clock.now() ? entry[0] : undefined;
    },
    async isTxnDone(key) {
      return live(txnDone, key);
    },
    async markTxnDone(key, ttlMs) {
      sweep();
      if (!live(txnDone, key)) txnDone.set(key, clock.now() + ttlMs);
    },
    async lockTxn(key, ttlMs) {
      sweep();
      if (live(txnLocks, key)) return 'busy';
      txnLocks.set(key, clock.now() + ttlMs);
      return 'acquired';
    },
    async renewTxnLock(key, ttlMs) {
      if (!live(txnLocks, key)) return false;
      txnLocks.set(key, clock.now() + ttlMs);
      return true;
    },
    async unlockTxn(key) {
      txnLocks.delete(key);
    },
    async close() {},
    sizes: () => ({ txnDone: txnDone.size, txnLocks: txnLocks.size, leftAt: leftAt.size, sfuRooms: sfuRooms.size, pendingLeaves: pendingLeaves.size }),
  };
}
