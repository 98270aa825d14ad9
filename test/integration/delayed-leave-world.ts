/**
 * The Matrix side of the delegated-leave tests: the composed fake homeserver (core with MSC4140
 * as Synapse 1.132 serves it, TLS federation userinfo for OpenID) with alice joined to a room, and Element Call's steps as recorded in
 * ../shared/fixtures/element-call: send the call membership, schedule the `{}` leave as a
 * delayed state event (18 s), ask the bridge's `/sfu/get` with `delay_id`/`delay_timeout`.
 * The bridge itself is wired by each test (embedded, the shipped configs, two replicas).
 * `stop()` stops what this started.
 */
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Env } from '../../bridge/config.ts';
import { startComposedHomeserver, type ComposedHomeserver } from '../fake-homeserver/compose.ts';
import { testRegistration } from '../fake-homeserver/server.ts';
import type { AppserviceRegistration } from '../fake-homeserver/appservice-pusher.ts';
import { CALL, joinContent, seedUsers, stateKeyOf } from './bridge-e2e-world.ts';

export const DEVICE = 'DEVICEA';
/** Element Call's `delay_timeout` (fixtures/element-call: 18000 on every /sfu/get). */
export const EC_DELAY_MS = 18_000;

export interface DelayedLeaveWorld {
  composed: ComposedHomeserver;
  reg: AppserviceRegistration;
  regFile: string;
  alice: string;
  roomId: string;
  /** Bridge environment for appservice mode against the core (the Synapse 1.132 path). */
  appserviceEnv: Env;
  /** The bridge's token overrides: trust the fake's TLS, its .well-known on its own port. */
  token: { federation: { tlsCa: string[]; wellKnownPort: number } };
  /** Element Call joining: membership, delayed leave, `/sfu/get` at `bridgeUrl`. */
  joinCall(bridgeUrl: string, opts?: { delayMs?: number }): Promise<{ jwt: string; url: string; delayId: string }>;
  /** The membership content now (undefined: none; `{}`: left). */
  membership(): Record<string, unknown> | undefined;
  /** `{action}` restarts the core received for the delay id, as the appservice acting for alice. */
  coreRestarts(delayId: string): number;
  /** When (epoch ms) each of those restarts arrived. */
  coreRestartTimes(delayId: string): number[];
  stop(): Promise<void>;
}

export async function startDelayedLeaveWorld(bridgeUrl: string): Promise<DelayedLeaveWorld> {
  const reg = testRegistration(bridgeUrl);
  const actions: { path: string; action: unknown; auth: string | undefined; at: number }[] = [];
  const composed = await startComposedHomeserver({
    registration: reg,
    backoffBaseMs: 100,
    extraRoutes: (app) => {
      app.use((req, _res, next) => {
        if (req.method === 'POST' && req.path.includes('/delayed_events/')) {
          actions.push({ path: req.path, action: (req.body as { action?: unknown } | undefined)?.action, auth: req.headers.authorization, at: Date.now() });
        }
        next();
      });
    },
  });
  const dir = mkdtempSync(join(tmpdir(), 'delayed-leave-'));
  try {
    const { hs, federation } = composed;
    federation.setWellKnownServer(`127.0.0.1:${federation.port}`);
    const { alice, makeRoom } = seedUsers(hs.model);
    const roomId = makeRoom();
    const regFile = join(dir, 'registration.yaml');
    writeFileSync(regFile, JSON.stringify(reg));
    const aliceToken = hs.model.registerUser('alice').accessToken;
    const key = stateKeyOf(alice, DEVICE);
    const statePath = `/_matrix/client/v3/rooms/${encodeURIComponent(roomId)}/state/${CALL}/${encodeURIComponent(key)}`;
    const put = async (query: string, body: unknown): Promise<Record<string, string>> => {
      const res = await fetch(`${hs.url}${statePath}${query}`, {
        method: 'PUT',
        headers: { Authorization: `Bearer ${aliceToken}`, 'Content-Type': 'application/json' },
        body: JSON.stringify(body),
      });
      if (res.status !== 200) throw new Error(`PUT state: ${res.status} ${await res.text()}`);
      return (await res.json()) as Record<string, string>;
    };
    const restarts = (delayId: string) =>
      actions.filter((a) => a.path.endsWith(`/delayed_events/${delayId}`) && a.action === 'restart' && a.auth === `Bearer ${reg.as_token}`);
    return {
      composed,
      reg,
      regFile,
      alice,
      roomId,
      appserviceEnv: {
        LIVEKIT_AS_REGISTRATION_FILE: regFile,
        LIVEKIT_HS_SERVER_NAME: hs.serverName,
        LIVEKIT_FULL_ACCESS_HOMESERVERS: hs.serverName,
        BRIDGE_HOMESERVER_URL: hs.url,
        BRIDGE_RECONCILE_INTERVAL_SECONDS: '0',
      },
      token: { federation: { tlsCa: [federation.certPem], wellKnownPort: federation.port } },
      async joinCall(url, opts = {}) {
        await put('', joinContent(DEVICE, alice));
        const delayMs = opts.delayMs ?? EC_DELAY_MS;
        const delayId = (await put(`?org.matrix.msc4140.delay=${delayMs}`, {})).delay_id!;
        const openid = await (
          await fetch(`${hs.url}/_matrix/client/v3/user/${encodeURIComponent(alice)}/openid/request_token`, {
            method: 'POST',
            headers: { Authorization: `Bearer ${aliceToken}`, 'Content-Type': 'application/json' },
            body: '{}',
          })
        ).json();
        const res = await fetch(`${url}/sfu/get`, {
          method: 'POST',
          headers: { 'Content-Type': 'application/json' },
          body: JSON.stringify({ room: roomId, openid_token: openid, device_id: DEVICE, delay_id: delayId, delay_timeout: delayMs }),
        });
        const json = (await res.json()) as { jwt?: string; url?: string };
        if (res.status !== 200 || !json.jwt || !json.url) throw new Error(`/sfu/get: ${res.status} ${JSON.stringify(json)}`);
        return { jwt: json.jwt, url: json.url, delayId };
      },
      membership: () => hs.model.stateEvent(roomId, CALL, key)?.content,
      coreRestarts: (delayId) => restarts(delayId).length,
      coreRestartTimes: (delayId) => restarts(delayId).map((a) => a.at),
      async stop() {
        await composed.stop();
        rmSync(dir, { recursive: true, force: true });
      },
    };
  } catch (err) {
    await composed.stop();
    rmSync(dir, { recursive: true, force: true });
    throw err;
  }
}
