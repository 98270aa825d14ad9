/**
 * Delegated delayed-leave jobs persisted in a real redis-server in lk-jwt-service's layout
 * (hash `lk-jwt:jobs`): a job survives a service restart and keeps working; expired jobs are
 * purged at start without being sent.
 */
import { afterEach, describe, expect, it } from 'vitest';
import { Redis } from 'ioredis';
import { REDIS_JOBS_HASH_KEY, jobField } from '../../bridge/token/job-store.ts';
import { liveKitIdentityForMember, liveKitRoomAlias } from '../../bridge/token/names.ts';
import { startRedisServer, type RunningRedis } from '../support/redis-server.ts';
import { waitFor } from '../support/wait.ts';
import { startFakeFederationServer } from '../fake-homeserver/federation.ts';
import { startFakeClientServerApi } from '../fake-homeserver/delayed-events.ts';
import { AS_TOKEN, startTokenHarness } from './token-harness.ts';

const ROOM = '!room:example.com';
const LK_ROOM = liveKitRoomAlias(ROOM, 'm.call#');
const cleanups: (() => Promise<unknown>)[] = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).toReversed()) await c();
});

async function setup() {
  const redisServer: RunningRedis = await startRedisServer();
  cleanups.push(() => redisServer.stop());
  const redis = new Redis(redisServer.url);
  cleanups.push(async () => redis.disconnect());
  const fed = await startFakeFederationServer();
  cleanups.push(() => fed.stop());
  const hs = await startFakeClientServerApi({ serverName: fed.serverName, asToken: AS_TOKEN });
  cleanups.push(() => hs.stop());
  const boot = async () => {
    const h = await startTokenHarness({ fed, hs, env: { LIVEKIT_REDIS_URL: redisServer.url } });
    let stopped = false;
    cleanups.push(async () => {
      if (!stopped) await h.stop();
    });
    return {
      h,
      stop: async () => {
        stopped = true;
        await h.stop();
      },
    };
  };
  return { redis, fed, hs, boot };
}

describe('delayed-leave jobs in Redis', () => {
  it('keeps a job across a service restart and finishes it afterwards (job_survives_a_service_restart)', async () => {
    const { redis, hs, boot } = await setup();
    const first = await boot();
    const u = first.h.user('alice', { joinedTo: [ROOM] });
    hs.scheduleDelayedEvent({ delayId: 'syd_keep', roomId: ROOM, delayMs: 30_000, userId: u.userId });
    const res = await first.h.post('/delegate_delayed_leave', {
      room_id: ROOM,
      slot_id: 'm.call#',
      openid_token: u.openid,
      member: { id: 'm1', claimed_user_id: u.userId, claimed_device_id: 'DEV' },
      delay_id: 'syd_keep',
      delay_timeout: 30_000,
    });
    expect(res.status).toBe(200);
    const identity = liveKitIdentityForMember(u.userId, 'DEV', 'm1');
    const raw = await redis.hget(REDIS_JOBS_HASH_KEY, jobField(LK_ROOM, identity));
    const stored = JSON.parse(raw!) as { Params: Record<string, unknown>; RestartedAt: string };
    expect(stored.Params).toEqual({
      DelayId: 'syd_keep',
      DelayTimeout: 30_000_000_000,
      ServerName: first.h.fed.serverName,
      LiveKitRoom: LK_ROOM,
      LiveKitIdentity: identity,
      // Ours, ignored by Go: the owner, for the authenticated fallback on Synapse 1.132.
      UserId: u.userId,
    });
    expect(Number.isFinite(Date.parse(stored.RestartedAt))).toBe(true);

    await first.stop();
    expect(await redis.hexists(REDIS_JOBS_HASH_KEY, jobField(LK_ROOM, identity))).toBe(1);

    const second = await boot();
    expect(second.h.service.delayedLeave.state(LK_ROOM, identity)).toBe('waiting');
    await second.h.webhook('participant_joined', LK_ROOM, identity);
    await waitFor('restart', () => hs.actions().includes('syd_keep:restart') || undefined);
    await second.h.webhook('participant_left', LK_ROOM, identity, true);
    await waitFor('send', () => hs.actions().includes('syd_keep:send') || undefined);
    await waitFor('job removed from Redis', async () => (await redis.hexists(REDIS_JOBS_HASH_KEY, jobField(LK_ROOM, identity))) === 0 || undefined);
  });

  it('purges expired jobs at start without sending them (expired_jobs_are_purged_on_restart)', async () => {
    const { redis, hs, boot } = await setup();
    const field = jobField(LK_ROOM, 'old-identity');
    await redis.hset(
      REDIS_JOBS_HASH_KEY,
      field,
      JSON.stringify({
        Params: { DelayId: 'syd_old', DelayTimeout: 5_000_000_000, ServerName: 'x', LiveKitRoom: LK_ROOM, LiveKitIdentity: 'old-identity' },
        RestartedAt: new Date(Date.now() - 60_000).toISOString(),
      }),
    );
    await redis.hset(REDIS_JOBS_HASH_KEY, 'garbage', 'not json');
    const { h } = await boot();
    expect(await redis.hexists(REDIS_JOBS_HASH_KEY, field)).toBe(0);
    expect(h.service.delayedLeave.size()).toBe(0);
    expect(hs.actions()).toEqual([]);
  });
});
