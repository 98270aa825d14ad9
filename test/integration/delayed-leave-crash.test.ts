/**
 * A client that crashes while the bridge holds its delegated leave (Element Call's `delay_id` on
 * `/sfu/get`, Synapse 1.132's delayed events): its call membership must end within 2 s, in each
 * shipped way of running, wired as shipped:
 * - embedded (`createEmbedded`, real SFU and bridge in one process, the ports `npm start` takes);
 * - the compose trial: the sfu.yaml trial-setup writes and the bridge environment of
 *   docker-compose.yml, loaded by the real loaders, with Redis, the compose network's name
 *   `bridge` resolved to loopback for the SFU's webhook requests;
 * - the same with the webhook removed from sfu.yaml (a misconfigured deployment): the bridge's
 *   own poll of the SFU still ends it within the poll interval + 2 s, and says what is wrong.
 * The participant is an @livekit/rtc-node client in its own process, killed with SIGKILL.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterEach, describe, expect, it } from 'vitest';
import { parse } from 'yaml';
import { systemClock } from '../../common/clock.ts';
import { createLogger, type Logger } from '../../common/logger.ts';
import { createBridge } from '../../bridge/bridge.ts';
import { DEFAULT_SANITY_CHECK_INTERVAL_SECONDS, resolveBridgeConfig, type Env } from '../../bridge/config.ts';
import { resolveSfuConfig } from '../../sfu/config.ts';
import { suiteWorkerConfig } from '../support/sfu-harness.ts';
import { createSfuServer } from '../../sfu/server.ts';
import { createEmbedded } from '../../embedded/embedded.ts';
import { TRIAL_DEFAULTS, writeTrialFiles, type TrialOptions } from '../../synapse-dev/trial-setup.ts';
import { readFileSync } from 'node:fs';
import { freePort, reservePort } from '../support/ports.ts';
import { spawnParticipant, type SpawnedParticipant } from '../support/rtc-node-participant.ts';
import { startRedisServer } from '../support/redis-server.ts';
import { waitFor } from '../support/wait.ts';
import { startDelayedLeaveWorld, type DelayedLeaveWorld } from './delayed-leave-world.ts';

const root = fileURLToPath(new URL('../..', import.meta.url));
const cleanups: (() => Promise<unknown>)[] = [];
afterEach(async () => {
  while (cleanups.length) await cleanups.pop()!().catch(() => undefined);
});

/** A logger whose warnings the test reads (and prints with DELAYED_LEAVE_TEST_LOG). */
function capturingLogger(): { logger: Logger; warnings: { msg: string }[] } {
  const warnings: { msg: string }[] = [];
  const logger = createLogger({
    name: 'test',
    level: process.env.DELAYED_LEAVE_TEST_LOG ? 'debug' : 'warn',
    destination: {
      write(line: string) {
        const parsed = JSON.parse(line) as { msg: string; level: number };
        if (parsed.level >= 40) warnings.push(parsed);
        if (process.env.DELAYED_LEAVE_TEST_LOG) process.stdout.write(line);
      },
    },
  });
  return { logger, warnings };
}

/**
 * Element Call joins, the participant (own process) connects, the bridge keeps the leave alive;
 * then the process is killed. Resolves with ms from the kill until the membership was `{}`.
 */
async function crashAndMeasure(w: DelayedLeaveWorld, bridgeUrl: string, limitMs: number): Promise<number> {
  const { jwt, url, delayId } = await w.joinCall(bridgeUrl);
  expect(w.membership()).toMatchObject({ device_id: 'DEVICEA' });
  const participant: SpawnedParticipant = await spawnParticipant(url, jwt);
  cleanups.push(() => participant.stop());
  // Connected: the bridge restarts the delayed leave (the {action} form as the appservice).
  await waitFor('the bridge restarted the delayed leave', () => w.coreRestarts(delayId) > 0, { timeoutMs: 15_000 });
  const killedAt = Date.now();
  await participant.crash();
  await waitFor('the call membership ended ({})', () => Object.keys(w.membership() ?? { pending: 1 }).length === 0, {
    timeoutMs: limitMs + 3000,
    intervalMs: 10,
  });
  return Date.now() - killedAt;
}

function composeService(name: string): { environment?: Record<string, string>; command?: string[] } {
  const compose = parse(readFileSync(join(root, 'docker-compose.yml'), 'utf8'), { merge: true }) as {
    services: Record<string, { environment?: Record<string, string>; command?: string[] }>;
  };
  return compose.services[name]!;
}

/** The compose trial's secrets dir, as trial-setup writes it with the compose environment. */
function trialSecrets(): string {
  const env = composeService('trial-setup').environment ?? {};
  const opts: TrialOptions = {
    serverName: env.TRIAL_SERVER_NAME ?? TRIAL_DEFAULTS.serverName,
    nodeIp: env.TRIAL_NODE_IP ?? TRIAL_DEFAULTS.nodeIp,
    portRangeStart: Number(env.TRIAL_PORT_RANGE_START ?? TRIAL_DEFAULTS.portRangeStart),
    portRangeEnd: Number(env.TRIAL_PORT_RANGE_END ?? TRIAL_DEFAULTS.portRangeEnd),
    bridgeUrl: env.TRIAL_BRIDGE_URL ?? TRIAL_DEFAULTS.bridgeUrl,
    turnHost: env.TRIAL_TURN_HOST ?? TRIAL_DEFAULTS.turnHost,
  };
  const dir = mkdtempSync(join(tmpdir(), 'trial-secrets-'));
  cleanups.push(async () => rmSync(dir, { recursive: true, force: true }));
  writeTrialFiles(dir, opts);
  return dir;
}

/**
 * SFU and bridge from the compose trial's files. Only what names this machine changes: ports
 * and addresses on loopback, the fake homeserver and its registration, the test Redis. The
 * SFU's webhook URL stays `http://bridge:8080/sfu_webhook`; its requests reach the bridge as
 * the compose network's DNS would send them.
 */
async function startComposeWiring(w: DelayedLeaveWorld, bridgePort: number, opts: { dropWebhook?: boolean } = {}) {
  const secrets = trialSecrets();
  const redis = await startRedisServer();
  cleanups.push(() => redis.stop());
  const sfuPort = await freePort();
  const sfuCommand = composeService('sfu').command ?? [];
  const sfuConfig = resolveSfuConfig({
    configFile: join(secrets, (sfuCommand[2] ?? '').replace('/secrets/', '')),
    overrides: (raw) => {
      const out: Record<string, unknown> = { ...raw, port: sfuPort, bind_addresses: ['127.0.0.1'], ...suiteWorkerConfig() };
      if (opts.dropWebhook) delete out.webhook;
      return out;
    },
  });
  const bridgeHost = new URL(TRIAL_DEFAULTS.bridgeUrl).host;
  const composeDns: typeof fetch = (input, init) => {
    const u = new URL(typeof input === 'string' || input instanceof URL ? input : input.url);
    if (u.host === bridgeHost) u.host = `127.0.0.1:${bridgePort}`;
    return fetch(u, init);
  };
  const sfuLog = capturingLogger();
  const sfu = createSfuServer({ config: sfuConfig, logger: sfuLog.logger, clock: systemClock, webhook: { fetch: composeDns } });
  await sfu.start();
  cleanups.push(() => sfu.stop());

  const bridgeService = composeService('bridge');
  const env: Env = { ...bridgeService.environment };
  for (const k of ['NODE_EXTRA_CA_CERTS', 'HEALTHCHECK_URLS']) delete env[k];
  Object.assign(env, {
    LIVEKIT_KEY_FILE: join(secrets, (env.LIVEKIT_KEY_FILE ?? '').replace('/secrets/', '')),
    LIVEKIT_URL: `ws://127.0.0.1:${sfuPort}`,
    LIVEKIT_JWT_BIND: `127.0.0.1:${bridgePort}`,
    LIVEKIT_REDIS_URL: redis.url,
    ...w.appserviceEnv,
  });
  const bridgeLog = capturingLogger();
  const config = resolveBridgeConfig(env, join(root, (bridgeService.command?.[2] ?? '').replace('/app/', '')));
  const bridge = createBridge({ config, logger: bridgeLog.logger, clock: systemClock, token: w.token });
  return { bridge, config, sfuConfig, warnings: bridgeLog.warnings };
}

describe('a crashed client holding a delegated leave', () => {
  it('embedded: its call membership ends within 2 s', async () => {
    const reserved = await reservePort();
    const bridgeUrl = `http://127.0.0.1:${reserved.port}`;
    const w = await startDelayedLeaveWorld(bridgeUrl);
    cleanups.push(() => w.stop());
    const dataDir = mkdtempSync(join(tmpdir(), 'embedded-'));
    cleanups.push(async () => rmSync(dataDir, { recursive: true, force: true }));
    const { logger, warnings } = capturingLogger();
    const embedded = createEmbedded({
      dataDir,
      sfuPort: await freePort(),
      bridgePort: reserved.port,
      host: '127.0.0.1',
      logger,
      clock: systemClock,
      env: w.appserviceEnv,
      token: w.token,
    });
    await reserved.release();
    await embedded.start();
    cleanups.push(() => embedded.stop());
    const ms = await crashAndMeasure(w, bridgeUrl, 2000);
    expect(ms).toBeLessThan(2000);
    expect(warnings.filter((x) => /webhook/.test(x.msg))).toEqual([]);
  });

  it('compose trial configs (trial-setup sfu.yaml, docker-compose.yml bridge environment, Redis): within 2 s', async () => {
    const reserved = await reservePort();
    const bridgeUrl = `http://127.0.0.1:${reserved.port}`;
    const w = await startDelayedLeaveWorld(bridgeUrl);
    cleanups.push(() => w.stop());
    const c = await startComposeWiring(w, reserved.port);
    expect(c.sfuConfig.webhook.urls).toEqual(['http://bridge:8080/sfu_webhook']);
    await reserved.release();
    await c.bridge.start();
    cleanups.push(() => c.bridge.stop());
    const ms = await crashAndMeasure(w, bridgeUrl, 2000);
    expect(ms).toBeLessThan(2000);
    expect(c.warnings.filter((x) => /webhook/.test(x.msg))).toEqual([]);
  });

  it('with the webhook missing from sfu.yaml: the bridge`s poll ends it within the interval + 2 s and logs the misconfiguration', async () => {
    const reserved = await reservePort();
    const bridgeUrl = `http://127.0.0.1:${reserved.port}`;
    const w = await startDelayedLeaveWorld(bridgeUrl);
    cleanups.push(() => w.stop());
    const c = await startComposeWiring(w, reserved.port, { dropWebhook: true });
    expect(c.sfuConfig.webhook.urls).toEqual([]);
    expect(c.config.sanityCheckIntervalSeconds).toBe(DEFAULT_SANITY_CHECK_INTERVAL_SECONDS);
    await reserved.release();
    await c.bridge.start();
    cleanups.push(() => c.bridge.stop());
    const limit = c.config.sanityCheckIntervalSeconds * 1000 + 2000;
    const ms = await crashAndMeasure(w, bridgeUrl, limit);
    expect(ms).toBeLessThan(limit);
    const warned = c.warnings.filter((x) => x.msg.includes('webhook.urls') && x.msg.includes('/sfu_webhook'));
    expect(warned).toHaveLength(1);
  });
});
