/**
 * Redis `BridgeStore`, shared by bridge replicas. Memberships and room members are hashes per
 * Matrix room; transaction records are plain keys written with `SET NX PX` so deduplication is
 * atomic across replicas and bounded in time (Synapse reuses txn ids after a restart). The
 * connection is owned by the caller (made with common/redis.ts) and closed by `close()`.
 */
import { randomBytes } from 'node:crypto';
import type { RedisClient } from '../../common/redis.ts';
import type { BridgeStore, CallMembership, SfuRoomBinding } from './store.ts';

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
