/**
 * Persistence of delegated delayed-leave jobs so they survive a restart: an in-memory store and
 * a Redis store behind one interface. The Redis layout is lk-jwt-service's (`store.go`), so a
 * deployment can switch services with jobs in flight: hash `lk-jwt:jobs`, field = compact JSON
 * `["<room>","<identity>"]`, value `{"Params":{"DelayId","DelayTimeout" (ns),"ServerName",
 * "LiveKitRoom","LiveKitIdentity"},"RestartedAt": RFC 3339}`. Our appservice-mode jobs add
 * `Params.AsUserId` (the MXID asserted to the homeserver) and OpenID-mode jobs `Params.UserId`
 * (the delayed event's owner, for the authenticated fallback), which Go ignores.
 *
 * Ownership (ours, not Go's): each job is run by one replica at a time, the holder of its lease
 * `matrixrtc:delayed-leave:lease:<field>` (value = replica id, PX expiry, renewed by the
 * owner). SFU events that reach a replica not running the job, and "I took this job" notices,
 * travel on the pub/sub channel `matrixrtc:delayed-leave:events`. Pub/sub and not a stream:
 * a message only matters to the replica running the job right now, and one lost while it dies
 * is made good by the new owner's own look-up at the SFU (GetParticipant, then the room poll),
 * so nothing needs to be kept, trimmed or acknowledged. The in-memory twin does the same within
 * one process (leases on the injected clock, messages to its own listeners).
 */
import { Cluster } from 'ioredis';
import type { RedisClient } from '../../common/redis.ts';
import type { Logger } from '../../common/logger.ts';
import { systemClock, type Clock } from '../../common/clock.ts';
import { goJsonArray } from './names.ts';

export const REDIS_JOBS_HASH_KEY = 'lk-jwt:jobs';
export const REDIS_JOB_LEASE_KEY_PREFIX = 'matrixrtc:delayed-leave:lease:';
export const REDIS_JOB_EVENTS_CHANNEL = 'matrixrtc:delayed-leave:events';

export interface JobParams {
  delayId: string;
  delayTimeoutMs: number;
  /** Server whose client-server API receives restart/send. */
  serverName: string;
  room: string;
  identity: string;
  /** Appservice mode: MXID asserted with the as_token on restart/send. */
  asUserId?: string;
  /**
   * OpenID mode: the MXID the token was issued to (the delayed event's owner). Lets the bridge,
   * when it is that user's homeserver's appservice, fall back to the authenticated `{action}`
   * form on a homeserver without the path form (Synapse 1.132).
   */
  userId?: string;
}

export interface StoredJob {
  params: JobParams;
  /** Epoch ms of the last successful restart (or of the job's creation). */
  restartedAt: number;
}

/** What replicas tell each other about jobs (see the channel above). */
export type JobMessage =
  | {
      kind: 'sfu';
      /** Replica that received the webhook. */
      from: string;
      room: string;
      identity: string;
      event: 'joined' | 'left' | 'aborted';
      clientInitiated: boolean;
    }
  | {
      /** `owner` took the job (a newer request for the same key): others drop their copy. */
      kind: 'claimed';
      owner: string;
      room: string;
      identity: string;
    }
  | {
      /** `owner` stopped and let its leases go: others adopt its jobs now, not a round later. */
      kind: 'released';
      owner: string;
    };

export interface DelayedLeaveJobStore {
  save(job: StoredJob): Promise<void>;
  delete(room: string, identity: string): Promise<void>;
  all(): Promise<StoredJob[]>;
  get(room: string, identity: string): Promise<StoredJob | undefined>;
  /**
   * Takes or extends the job's lease for `owner` for `ttlMs`: when nobody holds it, when
   * `owner` already does, or always with `force` (a newer job replaces the one wherever it
   * runs). true when `owner` holds it afterwards.
   */
  claim(room: string, identity: string, owner: string, ttlMs: number, force?: boolean): Promise<boolean>;
  /** Drops `owner`'s lease (nothing when someone else holds it). */
  release(room: string, identity: string, owner: string): Promise<void>;
  publish(message: JobMessage): Promise<void>;
  /** Every message published by any replica (this one included); returns the unsubscribe. */
  subscribe(listener: (message: JobMessage) => void): Promise<() => void>;
  close(): Promise<void>;
}

/** The message, or undefined when it is not one (a foreign publisher on the channel). */
export function parseJobMessage(raw: string): JobMessage | undefined {
  let m: Record<string, unknown>;
  try {
    m = JSON.parse(raw) as Record<string, unknown>;
  } catch {
    return undefined;
  }
  if (m?.kind === 'released' && typeof m.owner === 'string') return { kind: 'released', owner: m.owner };
  if (!m || typeof m.room !== 'string' || typeof m.identity !== 'string') return undefined;
  if (m.kind === 'sfu' && typeof m.from === 'string' && ['joined', 'left', 'aborted'].includes(m.event as string) && typeof m.clientInitiated === 'boolean') {
    return { kind: 'sfu', from: m.from, room: m.room, identity: m.identity, event: m.event as 'joined', clientInitiated: m.clientInitiated };
  }
  if (m.kind === 'claimed' && typeof m.owner === 'string') return { kind: 'claimed', owner: m.owner, room: m.room, identity: m.identity };
  return undefined;
}

export function jobField(room: string, identity: string): string {
  return goJsonArray([room, identity]);
}

export function createMemoryJobStore(clock: Clock = systemClock): DelayedLeaveJobStore {
  const jobs = new Map<string, StoredJob>();
  const leases = new Map<string, { owner: string; until: number }>();
  const listeners = new Set<(m: JobMessage) => void>();
  return {
    async claim(room, identity, owner, ttlMs, force = false) {
      const field = jobField(room, identity);
      const held = leases.get(field);
      if (!force && held && held.owner !== owner && held.until > clock.now()) return false;
      leases.set(field, { owner, until: clock.now() + ttlMs });
      return true;
    },
    async release(room, identity, owner) {
      const field = jobField(room, identity);
      if (leases.get(field)?.owner === owner) leases.delete(field);
    },
    async publish(message) {
      const copy = JSON.stringify(message);
      // Delivered later, as Redis would: never inside the publisher's own call.
      queueMicrotask(() => {
        for (const l of listeners) l(JSON.parse(copy) as JobMessage);
      });
    },
    async subscribe(listener) {
      listeners.add(listener);
      return () => listeners.delete(listener);
    },
    async save(job) {
      jobs.set(jobField(job.params.room, job.params.identity), structuredClone(job));
    },
    async delete(room, identity) {
      jobs.delete(jobField(room, identity));
    },
    async all() {
      return [...jobs.values()].map((j) => structuredClone(j));
    },
    async get(room, identity) {
      const job = jobs.get(jobField(room, identity));
      return job && structuredClone(job);
    },
    async close() {},
  };
}

interface GoStoredJob {
  Params: {
    DelayId: string;
    DelayTimeout: number;
    ServerName: string;
    LiveKitRoom: string;
    LiveKitIdentity: string;
    AsUserId?: string;
    UserId?: string;
  };
  RestartedAt: string;
}

export function encodeStoredJob(job: StoredJob): string {
  const value: GoStoredJob = {
    Params: {
      DelayId: job.params.delayId,
      DelayTimeout: job.params.delayTimeoutMs * 1_000_000,
      ServerName: job.params.serverName,
      LiveKitRoom: job.params.room,
      LiveKitIdentity: job.params.identity,
      ...(job.params.asUserId ? { AsUserId: job.params.asUserId } : {}),
      ...(job.params.userId ? { UserId: job.params.userId } : {}),
    },
    RestartedAt: new Date(job.restartedAt).toISOString(),
  };
  return JSON.stringify(value);
}

/** undefined when the value is not a stored job. */
export function decodeStoredJob(raw: string): StoredJob | undefined {
  let v: GoStoredJob;
  try {
    v = JSON.parse(raw) as GoStoredJob;
  } catch {
    return undefined;
  }
  const p = v?.Params;
  const restartedAt = Date.parse(v?.RestartedAt);
  if (
    !p ||
    typeof p.DelayId !== 'string' ||
    typeof p.DelayTimeout !== 'number' ||
    typeof p.ServerName !== 'string' ||
    typeof p.LiveKitRoom !== 'string' ||
    typeof p.LiveKitIdentity !== 'string' ||
    !Number.isFinite(restartedAt)
  ) {
    return undefined;
  }
  return {
    params: {
      delayId: p.DelayId,
      delayTimeoutMs: Math.round(p.DelayTimeout / 1_000_000),
      serverName: p.ServerName,
      room: p.LiveKitRoom,
      identity: p.LiveKitIdentity,
      ...(typeof p.AsUserId === 'string' && p.AsUserId ? { asUserId: p.AsUserId } : {}),
      ...(typeof p.UserId === 'string' && p.UserId ? { userId: p.UserId } : {}),
    },
    restartedAt,
  };
}

/** KEYS[1] lease; ARGV owner, ttl ms, force ('1'). Sets it when free, ours or forced. */
export const CLAIM_SCRIPT = `local v = redis.call('GET', KEYS[1])
if v == false or v == ARGV[1] or ARGV[3] == '1' then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return 1
end
return 0`;
/** KEYS[1] lease; ARGV[1] owner. Deletes it only when it is ours. */
export const RELEASE_SCRIPT = `if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0`;

/**
 * The store over a Redis connection it does not own (the caller closes the connection); the
 * subscriber connection it needs for the channel is its own, made on the first `subscribe`
 * and closed by `close()`.
 */
export function createRedisJobStore(deps: { redis: RedisClient; logger: Logger }): DelayedLeaveJobStore {
  const { redis, logger } = deps;
  let subscriber: RedisClient | undefined;
  const listeners = new Set<(m: JobMessage) => void>();
  const leaseKey = (room: string, identity: string) => REDIS_JOB_LEASE_KEY_PREFIX + jobField(room, identity);
  return {
    async claim(room, identity, owner, ttlMs, force = false) {
      const won = await redis.eval(CLAIM_SCRIPT, 1, leaseKey(room, identity), owner, String(Math.max(1, Math.round(ttlMs))), force ? '1' : '0');
      return won === 1;
    },
    async release(room, identity, owner) {
      await redis.eval(RELEASE_SCRIPT, 1, leaseKey(room, identity), owner);
    },
    async publish(message) {
      await redis.publish(REDIS_JOB_EVENTS_CHANNEL, JSON.stringify(message));
    },
    async subscribe(listener) {
      listeners.add(listener);
      if (!subscriber) {
        const sub: RedisClient = redis instanceof Cluster ? redis.duplicate() : redis.duplicate();
        subscriber = sub;
        sub.on('error', (err: Error) => logger.debug({ err: err.message }, 'delayed-leave channel connection error'));
        sub.on('message', (channel: string, raw: string) => {
          if (channel !== REDIS_JOB_EVENTS_CHANNEL) return;
          const m = parseJobMessage(raw);
          if (!m) {
            logger.debug('ignoring a message on the delayed-leave channel that is not ours');
            return;
          }
          for (const l of listeners) l(m);
        });
        await sub.subscribe(REDIS_JOB_EVENTS_CHANNEL);
      }
      return () => listeners.delete(listener);
    },
    async save(job) {
      await redis.hset(REDIS_JOBS_HASH_KEY, jobField(job.params.room, job.params.identity), encodeStoredJob(job));
    },
    async delete(room, identity) {
      await redis.hdel(REDIS_JOBS_HASH_KEY, jobField(room, identity));
    },
    async get(room, identity) {
      const raw = await redis.hget(REDIS_JOBS_HASH_KEY, jobField(room, identity));
      return raw === null ? undefined : decodeStoredJob(raw);
    },
    async all() {
      const fields = await redis.hgetall(REDIS_JOBS_HASH_KEY);
      const out: StoredJob[] = [];
      for (const [field, raw] of Object.entries(fields)) {
        const job = decodeStoredJob(raw);
        if (job) out.push(job);
        else logger.warn({ field }, 'skipping unparseable stored delayed-leave job');
      }
      return out;
    },
    async close() {
      listeners.clear();
      subscriber?.disconnect();
      subscriber = undefined;
    },
  };
}
