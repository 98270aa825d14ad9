/**
 * Where the membership monitor (membership-monitor.ts) keeps the participants it watches: an
 * in-memory store and a Redis store behind one interface, so replicas share one view and a
 * restart keeps it. Redis layout: hash `matrixrtc:membership-monitor:participants`, field =
 * compact JSON `["<LiveKit room>","<identity>"]` (as `lk-jwt:jobs`), value = the entry as JSON.
 * Leases (who sweeps this interval, who kicks this participant) are keys
 * `matrixrtc:membership-monitor:lease:<name>` holding the replica id with a PX expiry, taken with
 * the delayed-leave store's claim script (job-store.ts): free or already ours, never forced;
 * released by their holder (only) when it stops.
 * A value that does not parse is logged and deleted (it could never expire otherwise).
 * Both keep at most `maxEntries`: a new entry beyond is refused (`put` → false; the Redis check is
 * HLEN first, not atomic, so replicas may overshoot by the few registrations in flight).
 */
import type { RedisClient } from '../../common/redis.ts';
import type { Logger } from '../../common/logger.ts';
import type { Clock } from '../../common/clock.ts';
import { CLAIM_SCRIPT, jobField, RELEASE_SCRIPT } from './job-store.ts';

export const REDIS_MONITOR_HASH_KEY = 'matrixrtc:membership-monitor:participants';
export const REDIS_MONITOR_LEASE_KEY_PREFIX = 'matrixrtc:membership-monitor:lease:';
/** Default bound on watched participants (each is one token issued within the last 70 min). */
export const DEFAULT_MAX_MONITORED = 100_000;

/** Where the participant stands on the SFU, as far as the monitor knows. */
export type Presence = 'pending' | 'connected' | 'left';

export interface MonitoredParticipant {
  /** LiveKit room and identity the token was for. */
  room: string;
  identity: string;
  /** The Matrix room and user it was issued to. */
  roomId: string;
  userId: string;
  presence: Presence;
  /** Removed for not being joined; a reconnect is removed again until the user is a member. */
  kicked: boolean;
  /** Epoch ms of the last change (registration, leave, kick): a not-connected entry expires from it. */
  changedAt: number;
}

export interface MonitorStore {
  get(room: string, identity: string): Promise<MonitoredParticipant | undefined>;
  /** false when the store is full and the entry is new. */
  put(entry: MonitoredParticipant): Promise<boolean>;
  delete(room: string, identity: string): Promise<void>;
  all(): Promise<MonitoredParticipant[]>;
  /** Takes or extends lease `name` for `owner` when free or already `owner`'s; true when held. */
  claim(name: string, owner: string, ttlMs: number): Promise<boolean>;
  /** Drops `owner`'s lease `name` (nothing when another holds it). */
  release(name: string, owner: string): Promise<void>;
  close(): Promise<void>;
}

/** The entry, or undefined when `raw` is not one. */
export function decodeMonitored(raw: string): MonitoredParticipant | undefined {
  let v: Record<string, unknown>;
  try {
    v = JSON.parse(raw) as Record<string, unknown>;
  } catch {
    return undefined;
  }
  if (
    !v ||
    typeof v.room !== 'string' ||
    typeof v.identity !== 'string' ||
    typeof v.roomId !== 'string' ||
    typeof v.userId !== 'string' ||
    !['pending', 'connected', 'left'].includes(v.presence as string) ||
    typeof v.kicked !== 'boolean' ||
    typeof v.changedAt !== 'number'
  ) {
    return undefined;
  }
  return { room: v.room, identity: v.identity, roomId: v.roomId, userId: v.userId, presence: v.presence as Presence, kicked: v.kicked, changedAt: v.changedAt };
}

export function createMemoryMonitorStore(clock: Clock, maxEntries = DEFAULT_MAX_MONITORED): MonitorStore {
  const entries = new Map<string, MonitoredParticipant>();
  const leases = new Map<string, { owner: string; until: number }>();
  return {
    async get(room, identity) {
      const e = entries.get(jobField(room, identity));
      return e && { ...e };
    },
    async put(entry) {
      const field = jobField(entry.room, entry.identity);
      if (!entries.has(field) && entries.size >= maxEntries) return false;
      entries.set(field, { ...entry });
      return true;
    },
    async delete(room, identity) {
      entries.delete(jobField(room, identity));
    },
    async all() {
      return [...entries.values()].map((e) => ({ ...e }));
    },
    async claim(name, owner, ttlMs) {
      const held = leases.get(name);
      if (held && held.owner !== owner && held.until > clock.now()) return false;
      leases.set(name, { owner, until: clock.now() + ttlMs });
      return true;
    },
    async release(name, owner) {
      if (leases.get(name)?.owner === owner) leases.delete(name);
    },
    async close() {},
  };
}

/** Over a connection it does not own (the caller closes it). */
export function createRedisMonitorStore(deps: { redis: RedisClient; logger: Logger; maxEntries?: number }): MonitorStore {
  const { redis, logger } = deps;
  const maxEntries = deps.maxEntries ?? DEFAULT_MAX_MONITORED;
  return {
    async get(room, identity) {
      const raw = await redis.hget(REDIS_MONITOR_HASH_KEY, jobField(room, identity));
      return raw === null ? undefined : decodeMonitored(raw);
    },
    async put(entry) {
      const field = jobField(entry.room, entry.identity);
      if ((await redis.hlen(REDIS_MONITOR_HASH_KEY)) >= maxEntries && !(await redis.hexists(REDIS_MONITOR_HASH_KEY, field))) return false;
      await redis.hset(REDIS_MONITOR_HASH_KEY, field, JSON.stringify(entry));
      return true;
    },
    async delete(room, identity) {
      await redis.hdel(REDIS_MONITOR_HASH_KEY, jobField(room, identity));
    },
    async all() {
      const out: MonitoredParticipant[] = [];
      for (const [field, raw] of Object.entries(await redis.hgetall(REDIS_MONITOR_HASH_KEY))) {
        const e = decodeMonitored(raw);
        if (e) out.push(e);
        else {
          logger.warn({ field }, 'deleting an unparseable membership-monitor entry');
          await redis.hdel(REDIS_MONITOR_HASH_KEY, field);
        }
      }
      return out;
    },
    async claim(name, owner, ttlMs) {
      const won = await redis.eval(CLAIM_SCRIPT, 1, REDIS_MONITOR_LEASE_KEY_PREFIX + name, owner, String(Math.max(1, Math.round(ttlMs))), '0');
      return won === 1;
    },
    async release(name, owner) {
      await redis.eval(RELEASE_SCRIPT, 1, REDIS_MONITOR_LEASE_KEY_PREFIX + name, owner);
    },
    async close() {},
  };
}
