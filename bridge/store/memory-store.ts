/**
 * In-memory `BridgeStore` for a single bridge process (and tests). Expiring records use the
 * injected clock, so a test moves time forward instead of sleeping.
 */
import type { Clock } from '../../common/clock.ts';
import type { BridgeStore, CallMembership, SfuRoomBinding } from './store.ts';

export function createMemoryStore(deps: { clock: Clock }): BridgeStore {
  const { clock } = deps;
  const calls = new Map<string, Map<string, CallMembership>>();
  const members = new Map<string, Map<string, string>>();
  const known = new Set<string>();
  const sfuRooms = new Map<string, SfuRoomBinding>();
  const deletions = new Map<string, number>();
  const txnDone = new Map<string, number>();
  const txnLocks = new Map<string, number>();

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
    async setRoomDeleteAt(name, at) {
      deletions.set(name, at);
    },
    async clearRoomDeleteAt(name) {
      deletions.delete(name);
    },
    async listRoomDeletions() {
      return new Map(deletions);
    },
    async isTxnDone(key) {
      return live(txnDone, key);
    },
    async markTxnDone(key, ttlMs) {
      if (!live(txnDone, key)) txnDone.set(key, clock.now() + ttlMs);
    },
    async lockTxn(key, ttlMs) {
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
  };
}
