/**
 * The Redis job store's ownership half against a real redis-server: leases (taken when free or
 * ours, forced by a newer job, expiring, released only by their holder) under the documented
 * key, and messages between two stores on two connections over the documented channel, with
 * foreign messages on it ignored.
 */
import { Redis } from 'ioredis';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createSilentLogger } from '../../common/logger.ts';
import {
  createRedisJobStore,
  jobField,
  REDIS_JOB_EVENTS_CHANNEL,
  REDIS_JOB_LEASE_KEY_PREFIX,
  type DelayedLeaveJobStore,
  type JobMessage,
} from '../../bridge/token/job-store.ts';
import { startRedisServer, type RunningRedis } from '../support/redis-server.ts';
import { waitFor } from '../support/wait.ts';

let server: RunningRedis;
const conns: Redis[] = [];
const stores: DelayedLeaveJobStore[] = [];
beforeAll(async () => {
  server = await startRedisServer();
});
afterAll(async () => {
  for (const s of stores) await s.close();
  for (const c of conns) c.disconnect();
  await server.stop();
});
function store(): { store: DelayedLeaveJobStore; redis: Redis } {
  const redis = new Redis(server.url);
  conns.push(redis);
  const s = createRedisJobStore({ redis, logger: createSilentLogger() });
  stores.push(s);
  return { store: s, redis };
}

describe('Redis job store: leases and messages', () => {
  it('takes a free lease, refuses another holder`s until it expires, yields to a forced claim, releases only its own', async () => {
    const { store: s, redis } = store();
    const key = REDIS_JOB_LEASE_KEY_PREFIX + jobField('room', 'id');
    expect(await s.claim('room', 'id', 'A', 300)).toBe(true);
    expect(await redis.get(key)).toBe('A');
    expect(await redis.pttl(key)).toBeGreaterThan(0);
    expect(await s.claim('room', 'id', 'B', 300)).toBe(false);
    expect(await s.claim('room', 'id', 'A', 300)).toBe(true);
    await s.release('room', 'id', 'B');
    expect(await redis.get(key)).toBe('A');
    await waitFor('lease expired', async () => (await redis.exists(key)) === 0, { timeoutMs: 2000 });
    expect(await s.claim('room', 'id', 'B', 5000)).toBe(true);
    expect(await s.claim('room', 'id', 'A', 5000, true)).toBe(true);
    expect(await redis.get(key)).toBe('A');
    await s.release('room', 'id', 'A');
    expect(await redis.exists(key)).toBe(0);
  });

  it('carries messages between stores on different connections and ignores foreign ones', async () => {
    const a = store();
    const b = store();
    const got: JobMessage[] = [];
    await b.store.subscribe((m) => got.push(m));
    await a.redis.publish(REDIS_JOB_EVENTS_CHANNEL, 'not json');
    await a.redis.publish(REDIS_JOB_EVENTS_CHANNEL, JSON.stringify({ kind: 'sfu', room: 1 }));
    const msg: JobMessage = { kind: 'sfu', from: 'A', room: 'r', identity: 'i', event: 'left', clientInitiated: true };
    await a.store.publish(msg);
    await a.store.publish({ kind: 'released', owner: 'A' });
    await waitFor('two messages', () => got.length >= 2, { timeoutMs: 2000 });
    expect(got).toEqual([msg, { kind: 'released', owner: 'A' }]);
  });
});
