/**
 * Persistence of delegated delayed-leave jobs so they survive a restart: an in-memory store and
 * a Redis store behind one interface. The Redis layout is lk-jwt-service's (`store.go`), so a
 * deployment can switch services with jobs in flight: hash `lk-jwt:jobs`, field = compact JSON
 * `["<room>","<identity>"]`, value `{"Params":{"DelayId","DelayTimeout" (ns),"ServerName",
 * "LiveKitRoom","LiveKitIdentity"},"RestartedAt": RFC 3339}`. Our appservice-mode jobs add
 * `Params.AsUserId` (the MXID asserted to the homeserver) and OpenID-mode jobs `Params.UserId`
 * (the delayed event's owner, for the authenticated fallback), which Go ignores.
 */
import type { RedisClient } from '../../common/redis.ts';
import type { Logger } from '../../common/logger.ts';
import { goJsonArray } from './names.ts';

export const REDIS_JOBS_HASH_KEY = 'lk-jwt:jobs';

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

export interface DelayedLeaveJobStore {
  save(job: StoredJob): Promise<void>;
  delete(room: string, identity: string): Promise<void>;
  all(): Promise<StoredJob[]>;
  close(): Promise<void>;
}

export function jobField(room: string, identity: string): string {
  return goJsonArray([room, identity]);
}

export function createMemoryJobStore(): DelayedLeaveJobStore {
  const jobs = new Map<string, StoredJob>();
  return {
    async save(job) {
      jobs.set(jobField(job.params.room, job.params.identity), structuredClone(job));
    },
    async delete(room, identity) {
      jobs.delete(jobField(room, identity));
    },
    async all() {
      return [...jobs.values()].map((j) => structuredClone(j));
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

/** The store over a Redis connection it does not own (the caller closes the connection). */
export function createRedisJobStore(deps: { redis: RedisClient; logger: Logger }): DelayedLeaveJobStore {
  const { redis, logger } = deps;
  return {
    async save(job) {
      await redis.hset(REDIS_JOBS_HASH_KEY, jobField(job.params.room, job.params.identity), encodeStoredJob(job));
    },
    async delete(room, identity) {
      await redis.hdel(REDIS_JOBS_HASH_KEY, jobField(room, identity));
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
    async close() {},
  };
}
