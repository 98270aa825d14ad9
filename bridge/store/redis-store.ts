/**
 * Redis `BridgeStore`, shared by bridge replicas. Memberships and room members are hashes per
 * Matrix room; transaction records and latest-leave times are plain keys written with `PX`, so
 * they expire on their own (deduplication is atomic across replicas with `SET NX PX`, and bounded
 * in time: Synapse reuses txn ids after a restart). SFU room bindings are deleted with the SFU
 * room; pending leaves are one hash, taken with `HDEL` so only one replica acts on each. The
 * connection is owned by the caller (made with common/redis.ts) and closed by `close()`.
 */
import { randomBytes } from 'node:crypto';
import type { RedisClient } from '../../common/redis.ts';
import type { BridgeStore, CallMembership, PendingLeave, SfuRoomBinding } from './store.ts';

/** Key names (all under one prefix so a deployment can share a Redis). */
export const REDIS_KEYS = {
  /** hash: membership key -> JSON CallMembership, one per Matrix room */
  calls: (roomId: string) => `mrtc:bridge:calls:${roomId}`,
  /** set of Matrix room ids with at least one membership */
  callRooms: 'mrtc:bridge:call_rooms',
  /** hash: user id -> m.room.member membership, one per Matrix room */
  members: (roomId: string) => `mrtc:bridge:members:${roomId}`,
  /** set of every Matrix room id seen */
  knownRooms: 'mrtc:bridge:known_rooms',
  /** hash: SFU room name -> JSON {roomId, slotId} */
  sfuRooms: 'mrtc:bridge:sfu_rooms',
  /** hash: SFU room name -> epoch ms of the pending deletion */
  roomDeletions: 'mrtc:bridge:room_delete_at',
  /** hash: `<room id>\0<membership key>` -> JSON PendingLeave */
  pendingLeaves: 'mrtc:bridge:pending_leaves',
  /** string with TTL: origin_server_ts of the latest leave applied to a membership key */
  leftAt: (roomId: string, key: string) => `mrtc:bridge:left_at:${roomId}:${key}`,
  /** string with TTL: a processed transaction */
  txnDone: (key: string) => `mrtc:bridge:txn:done:${key}`,
  /** string with TTL: the lease (owner id) of the replica processing a transaction */
  txnLock: (key: string) => `mrtc:bridge:txn:lock:${key}`,
} as const;

/** Compare-and-act on a lease: only its owner may renew (PEXPIRE) or release (DEL) it. */
const RENEW_IF_OWNER = "if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('pexpire', KEYS[1], ARGV[2]) else return 0 end";
const DELETE_IF_OWNER = "if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) else return 0 end";

export function createRedisStore(deps: { redis: RedisClient }): BridgeStore {
  const { redis } = deps;
  /** Who holds a lease taken by this store instance. */
  const owner = randomBytes(12).toString('base64url');
  return {
    async listMemberships(roomId) {
      const all = await redis.hvals(REDIS_KEYS.calls(roomId));
      return all.map((v) => JSON.parse(v) as CallMembership);
    },
    async listCallRooms() {
      return await redis.smembers(REDIS_KEYS.callRooms);
    },
    async putMembership(m) {
      await redis
        .multi()
        .hset(REDIS_KEYS.calls(m.roomId), m.key, JSON.stringify(m))
        .sadd(REDIS_KEYS.callRooms, m.roomId)
        .sadd(REDIS_KEYS.knownRooms, m.roomId)
        .exec();
    },
    async removeMembership(roomId, key) {
      const res = await redis
        .multi()
        .hget(REDIS_KEYS.calls(roomId), key)
        .hdel(REDIS_KEYS.calls(roomId), key)
        .hlen(REDIS_KEYS.calls(roomId))
        .exec();
      const raw = res?.[0]?.[1] as string | null | undefined;
      const left = res?.[2]?.[1] as number | undefined;
      if (left === 0) await redis.srem(REDIS_KEYS.callRooms, roomId);
      return raw ? (JSON.parse(raw) as CallMembership) : undefined;
    },
    async setRoomMember(roomId, userId, membership) {
      await redis
        .multi()
        .hset(REDIS_KEYS.members(roomId), userId, membership)
        .sadd(REDIS_KEYS.knownRooms, roomId)
        .exec();
    },
    async getRoomMember(roomId, userId) {
      return (await redis.hget(REDIS_KEYS.members(roomId), userId)) ?? undefined;
    },
    async listKnownRooms() {
      return await redis.smembers(REDIS_KEYS.knownRooms);
    },
    async addKnownRoom(roomId) {
      await redis.sadd(REDIS_KEYS.knownRooms, roomId);
    },
    async bindSfuRoom(name, binding) {
      await redis.hset(REDIS_KEYS.sfuRooms, name, JSON.stringify(binding));
    },
    async lookupSfuRoom(name) {
      const raw = await redis.hget(REDIS_KEYS.sfuRooms, name);
      return raw ? (JSON.parse(raw) as SfuRoomBinding) : undefined;
    },
    async unbindSfuRoom(name) {
      await redis.hdel(REDIS_KEYS.sfuRooms, name);
    },
    async setRoomDeleteAt(name, at) {
      await redis.hset(REDIS_KEYS.roomDeletions, name, String(at));
    },
    async clearRoomDeleteAt(name) {
      await redis.hdel(REDIS_KEYS.roomDeletions, name);
    },
    async listRoomDeletions() {
      const all = await redis.hgetall(REDIS_KEYS.roomDeletions);
      return new Map(Object.entries(all).map(([k, v]) => [k, Number(v)]));
    },
    async setPendingLeave(p) {
      await redis.hset(REDIS_KEYS.pendingLeaves, `${p.roomId}\u0000${p.key}`, JSON.stringify(p));
    },
    async takePendingLeave(roomId, key) {
      const field = `${roomId}\u0000${key}`;
      const res = await redis.multi().hget(REDIS_KEYS.pendingLeaves, field).hdel(REDIS_KEYS.pendingLeaves, field).exec();
      const raw = res?.[0]?.[1] as string | null | undefined;
      return raw && res?.[1]?.[1] === 1 ? (JSON.parse(raw) as PendingLeave) : undefined;
    },
    async listPendingLeaves() {
      return (await redis.hvals(REDIS_KEYS.pendingLeaves)).map((v) => JSON.parse(v) as PendingLeave);
    },
    async setLeftAt(roomId, key, at, ttlMs) {
      await redis.set(REDIS_KEYS.leftAt(roomId, key), String(at), 'PX', Math.max(1, Math.round(ttlMs)));
    },
    async getLeftAt(roomId, key) {
      const raw = await redis.get(REDIS_KEYS.leftAt(roomId, key));
      return raw === null ? undefined : Number(raw);
    },
    async isTxnDone(key) {
      return (await redis.exists(REDIS_KEYS.txnDone(key))) === 1;
    },
    async markTxnDone(key, ttlMs) {
      await redis.set(REDIS_KEYS.txnDone(key), '1', 'PX', ttlMs, 'NX');
    },
    async lockTxn(key, ttlMs) {
      const ok = await redis.set(REDIS_KEYS.txnLock(key), owner, 'PX', ttlMs, 'NX');
      return ok === 'OK' ? 'acquired' : 'busy';
    },
    async renewTxnLock(key, ttlMs) {
      return Number(await redis.eval(RENEW_IF_OWNER, 1, REDIS_KEYS.txnLock(key), owner, String(ttlMs))) === 1;
    },
    async unlockTxn(key) {
      await redis.eval(DELETE_IF_OWNER, 1, REDIS_KEYS.txnLock(key), owner);
    },
    async close() {
      redis.disconnect();
    },
  };
}
