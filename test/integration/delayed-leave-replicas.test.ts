/**
 * Two bridge replicas (createBridge, as bridge/main.ts builds it) on one real Redis, one real
 * SFU whose webhooks reach only the second replica (as a Service would pick one), Element
 * Call's delegated leave on the fake Synapse 1.132: the job is run by exactly one replica (the
 * restarts the homeserver receives keep one cadence), a webhook reaching the other replica
 * reaches the owner, and stopping the owner hands the job to the other within the lease.
 * The SFU poll is off (LIVEKIT_SANITY_CHECK_INTERVAL_SECONDS=0), so only webhooks tell.
 */
import { afterEach, describe, expect, it } from 'vitest';
import { systemClock } from '../../common/clock.ts';
import { createLogger, createSilentLogger } from '../../common/logger.ts';
import { createBridge, type Bridge } from '../../bridge/bridge.ts';
import { resolveBridgeConfig } from '../../bridge/config.ts';
import { DEFAULT_LEASE_MS } from '../../bridge/token/delayed-leave.ts';
import { reservePort, type ReservedPort } from '../support/ports.ts';
import { startRedisServer, type RunningRedis } from '../support/redis-server.ts';
import { connectRtcNode } from '../support/rtc-node.ts';
import { startTestSfu, TEST_API_KEY, TEST_API_SECRET, type TestSfu } from '../support/sfu-harness.ts';
import { waitFor } from '../support/wait.ts';
import { startDelayedLeaveWorld, type DelayedLeaveWorld } from './delayed-leave-world.ts';

const cleanups: (() => Promise<unknown>)[] = [];
afterEach(async () => {
  while (cleanups.length) await cleanups.pop()!().catch(() => undefined);
});

/** Restarts every 3.2 s; short enough to see a cadence, long enough that a hand-over beats it. */
const DELAY_MS = 4000;

interface Scene {
  w: DelayedLeaveWorld;
  sfu: TestSfu;
  urls: { a: string; b: string };
  startReplica(which: 'a' | 'b'): Promise<Bridge>;
}

async function scene(): Promise<Scene> {
  const ports: Record<'a' | 'b', ReservedPort> = { a: await reservePort(), b: await reservePort() };
  const urls = { a: `http://127.0.0.1:${ports.a.port}`, b: `http://127.0.0.1:${ports.b.port}` };
  cleanups.push(() => ports.a.release(), () => ports.b.release());
  const redis: RunningRedis = await startRedisServer();
  cleanups.push(() => redis.stop());
  const w = await startDelayedLeaveWorld(urls.a);
  cleanups.push(() => w.stop());
  const sfu = await startTestSfu({ webhook: { api_key: TEST_API_KEY, urls: [`${urls.b}/sfu_webhook`] } });
  cleanups.push(() => sfu.stop());
  return {
    w,
    sfu,
    urls,
    async startReplica(which) {
      const config = resolveBridgeConfig({
        ...w.appserviceEnv,
        LIVEKIT_URL: sfu.wsUrl,
        LIVEKIT_KEY: TEST_API_KEY,
        LIVEKIT_SECRET: TEST_API_SECRET,
        LIVEKIT_JWT_BIND: `127.0.0.1:${ports[which].port}`,
        LIVEKIT_REDIS_URL: redis.url,
        LIVEKIT_SANITY_CHECK_INTERVAL_SECONDS: '0',
        // Not what this test is about (and two replicas' start-up reconciles race on it).
        BRIDGE_MEMBERSHIP_CHECK: 'false',
      });
      const bridge = createBridge({ config, logger: process.env.DL_LOG ? createLogger({ name: which, level: 'debug' }) : createSilentLogger(), clock: systemClock, token: w.token });
      await ports[which].release();
      await bridge.start();
      cleanups.push(() => bridge.stop());
      return bridge;
    },
  };
}

const gaps = (times: number[]) => times.slice(1).map((t, i) => t - times[i]!);

describe('delegated leaves with two bridge replicas on one Redis', () => {
  it('a webhook that reaches the replica not running the job reaches the owner: the leave is sent', async () => {
    const s = await scene();
    await s.startReplica('a');
    await s.startReplica('b');
    const { jwt, url, delayId } = await s.w.joinCall(s.urls.a, { delayMs: DELAY_MS });
    const client = await connectRtcNode(url, jwt);
    cleanups.push(() => client.disconnect());
    await waitFor('restarted while connected', () => s.w.coreRestarts(delayId) > 0, { timeoutMs: 10_000 });
    const leftAt = Date.now();
    await client.disconnect();
    await waitFor('membership {}', () => Object.keys(s.w.membership() ?? { x: 1 }).length === 0, { timeoutMs: 5000, intervalMs: 10 });
    expect(Date.now() - leftAt).toBeLessThan(2000);
  });

  it('runs the job in exactly one replica, and the other takes it over within the lease when the owner stops', async () => {
    const s = await scene();
    const a = await s.startReplica('a');
    const { jwt, url, delayId } = await s.w.joinCall(s.urls.a, { delayMs: DELAY_MS });
    // B starts with the job already stored: it must not run it while A does.
    await s.startReplica('b');
    const client = await connectRtcNode(url, jwt);
    cleanups.push(() => client.disconnect());
    await waitFor('three restarts', () => s.w.coreRestarts(delayId) >= 3, { timeoutMs: 15_000 });
    // One runner restarts every 80 % of 2 s; two would interleave.
    const before = s.w.coreRestartTimes(delayId);
    expect(Math.min(...gaps(before))).toBeGreaterThan(0.6 * DELAY_MS);

    const stoppedAt = Date.now();
    await a.stop();
    await waitFor('B restarts the delayed leave', () => s.w.coreRestartTimes(delayId).some((t) => t > stoppedAt), { timeoutMs: DEFAULT_LEASE_MS + 2000 });
    const takeover = s.w.coreRestartTimes(delayId).find((t) => t > stoppedAt)! - stoppedAt;
    expect(takeover).toBeLessThan(DEFAULT_LEASE_MS);
    // The delayed leave never fired meanwhile: alice is still in the call.
    expect(s.w.membership()).toMatchObject({ device_id: 'DEVICEA' });
    const count = s.w.coreRestarts(delayId);
    await waitFor('two more restarts', () => s.w.coreRestarts(delayId) >= count + 2, { timeoutMs: 10_000 });
    const after = s.w.coreRestartTimes(delayId).filter((t) => t > stoppedAt);
    expect(Math.min(...gaps(after))).toBeGreaterThan(0.6 * DELAY_MS);
    // Still alive after the hand-over: the leave was never sent.
    expect(s.w.membership()).toMatchObject({ device_id: 'DEVICEA' });
  });
});
