/**
 * The bridge as a drop-in for element-hq/lk-jwt-service, started the way bridge/main.ts starts
 * it (`resolveBridgeConfig` over a plain environment, then `createBridge`) with nothing but
 * lk-jwt-service's variables: once in its plain mode (no registration: no membership check,
 * tokens for Element Call's recorded `/sfu/get` and `/get_token` bodies, duplicates included,
 * that join our real SFU with @livekit/rtc-node), once in its appservice mode
 * (`LIVEKIT_AS_TOKEN`, `LIVEKIT_HS_TOKEN`, `LIVEKIT_HS_SERVER_NAME`,
 * `LIVEKIT_CS_API_URL_OVERRIDES` pointing at the fake homeserver on plain HTTP, no
 * `BRIDGE_HOMESERVER_URL`: membership checked, OpenID verified at that plain-HTTP URL for
 * `matrix_server_name: localhost` as Element Call sends it), and once with the homeserver found
 * only through the server name's `.well-known/matrix/client`, which answers late.
 */
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { afterEach, describe, expect, it } from 'vitest';
import { createManualClock, systemClock, type Clock } from '../../common/clock.ts';
import { createLogger } from '../../common/logger.ts';
import { createBridge, type BridgeProcessDeps } from '../../bridge/bridge.ts';
import { resolveBridgeConfig, type Env } from '../../bridge/config.ts';
import { legacyLiveKitIdentity, liveKitIdentityForMember, liveKitRoomAlias } from '../../bridge/token/names.ts';
import { startComposedHomeserver, type ComposedHomeserver } from '../fake-homeserver/compose.ts';
import { startFakeFederationServer } from '../fake-homeserver/federation.ts';
import { testRegistration } from '../fake-homeserver/server.ts';
import { reservePort } from '../support/ports.ts';
import { connectRtcNode, type RtcNodeClient } from '../support/rtc-node.ts';
import { startTestSfu, TEST_API_KEY, TEST_API_SECRET, type TestSfu } from '../support/sfu-harness.ts';
import { waitFor } from '../support/wait.ts';

const SLOT = 'm.call#ROOM';
const USERINFO = '/_matrix/federation/v1/openid/userinfo';

// ---------------------------------------------------------------------------------------------
// Element Call's recorded requests (fixtures/element-call/token-service-requests.md).

interface RecordedRequest {
  run: string;
  path: string;
  body: Record<string, unknown>;
}

function recordedRequests(): RecordedRequest[] {
  const file = fileURLToPath(new URL('../../../shared/fixtures/element-call/token-service-requests.md', import.meta.url));
  const text = readFileSync(file, 'utf8');
  const out: RecordedRequest[] = [];
  for (const m of text.matchAll(/^### (\w+) POST (\S+).*\n```json\n([\s\S]*?)\n```/gm)) {
    const path = new URL(m[2]!, 'http://x').pathname;
    out.push({ run: m[1]!, path, body: JSON.parse(m[3]!) as Record<string, unknown> });
  }
  return out;
}

/** Run 3: two users, each through `/sfu/get` (twice, then twice with a delayed leave) and `/get_token`. */
const RUN3 = recordedRequests().filter((r) => r.run === 'run3');
const DEVICE_OWNER: Record<string, string> = { OLJQEKKKJK: 'brown-solid-snail', XJLQRFYKQT: 'orange-surprised-swallow' };
const deviceOf = (b: Record<string, unknown>): string =>
  String(b.device_id ?? (b.member as Record<string, unknown> | undefined)?.claimed_device_id);

// ---------------------------------------------------------------------------------------------
// What each test starts; stopped after each test, last started first.

const stops: (() => Promise<unknown>)[] = [];
afterEach(async () => {
  while (stops.length) await stops.pop()!().catch(() => undefined);
});

interface Started {
  bridgeUrl: string;
  logs: Record<string, unknown>[];
}

/** The bridge's port, held until the bridge listens (the homeserver may need its URL first). */
async function reserveBridge(): Promise<{ port: number; url: string; release(): Promise<void> }> {
  const reserved = await reservePort();
  stops.push(() => reserved.release());
  return { port: reserved.port, url: `http://127.0.0.1:${reserved.port}`, release: () => reserved.release() };
}

/** bridge/main.ts's way: `resolveBridgeConfig` over the environment only, then `createBridge`. */
async function startBridge(
  reserved: { port: number; url: string; release(): Promise<void> },
  env: Env,
  extra: Pick<BridgeProcessDeps, 'token'> & { clock?: Clock } = {},
): Promise<Started> {
  const e = { ...env, LIVEKIT_JWT_BIND: `127.0.0.1:${reserved.port}` };
  expect(Object.keys(e).filter((k) => !k.startsWith('LIVEKIT_'))).toEqual([]);
  const logs: Record<string, unknown>[] = [];
  const logger = createLogger({ name: 'bridge', level: 'debug', destination: { write: (line: string) => void logs.push(JSON.parse(line) as Record<string, unknown>) } });
  const bridge = createBridge({ config: resolveBridgeConfig(e), logger, clock: extra.clock ?? systemClock, ...(extra.token ? { token: extra.token } : {}) });
  await reserved.release();
  await bridge.start();
  stops.push(() => bridge.stop());
  return { bridgeUrl: reserved.url, logs };
}

async function startSfu(): Promise<TestSfu> {
  // As lk-jwt-service deployments run LiveKit: rooms exist only once the token service made them.
  const sfu = await startTestSfu({ room: { auto_create: false } });
  stops.push(() => sfu.stop());
  return sfu;
}

/** The composed fake homeserver; `corePaths` are the paths its plain-HTTP core was asked. */
async function startHomeserver(opts: Parameters<typeof startComposedHomeserver>[0]): Promise<{ composed: ComposedHomeserver; corePaths: string[]; coreUserinfo: () => string[] }> {
  const corePaths: string[] = [];
  const composed = await startComposedHomeserver({
    ...opts,
    extraRoutes: (app) => {
      app.use((req, _res, next) => {
        corePaths.push(req.path);
        next();
      });
    },
  });
  stops.push(() => composed.stop());
  return { composed, corePaths, coreUserinfo: () => corePaths.filter((p) => p === USERINFO) };
}

async function connect(url: string, jwt: string): Promise<RtcNodeClient> {
  const c = await connectRtcNode(url, jwt);
  stops.push(() => c.disconnect());
  return c;
}

async function post(base: string, path: string, body: unknown): Promise<{ status: number; json: Record<string, unknown> }> {
  const res = await fetch(`${base}${path}`, { method: 'POST', headers: { 'Content-Type': 'application/json' }, body: JSON.stringify(body) });
  return { status: res.status, json: (await res.json().catch(() => ({}))) as Record<string, unknown> };
}

/** An OpenID token from the fake homeserver's `request_token`, as Element Call gets one. */
async function openIdToken(composed: ComposedHomeserver, accessToken: string, userId: string): Promise<Record<string, unknown>> {
  const res = await fetch(`${composed.hs.url}/_matrix/client/v3/user/${encodeURIComponent(userId)}/openid/request_token`, {
    method: 'POST',
    headers: { Authorization: `Bearer ${accessToken}`, 'Content-Type': 'application/json' },
    body: '{}',
  });
  return (await res.json()) as Record<string, unknown>;
}

const membershipLine = (logs: Record<string, unknown>[]) => logs.filter((l) => typeof l.msg === 'string' && l.msg.startsWith('membership check'));

describe("with exactly lk-jwt-service's environment", () => {
  it.each([
    ['federation discovery over TLS', false],
    ['LIVEKIT_CS_API_URL_OVERRIDES on plain HTTP', true],
  ])(
    "issues tokens for Element Call's recorded /sfu/get and /get_token bodies without a membership check, and they join our SFU (OpenID by %s)",
    async (_how, override) => {
      const sfu = await startSfu();
      const { composed, coreUserinfo } = await startHomeserver({ registration: testRegistration(null) });
      const { hs, federation } = composed;
      // `localhost` delegates federation to the TLS listener; its client API is the core.
      federation.setWellKnownServer(`127.0.0.1:${federation.port}`);
      federation.setWellKnownClient(hs.url);
      const { bridgeUrl, logs } = await startBridge(
        await reserveBridge(),
        {
          LIVEKIT_URL: sfu.wsUrl,
          LIVEKIT_KEY: TEST_API_KEY,
          LIVEKIT_SECRET: TEST_API_SECRET,
          LIVEKIT_FULL_ACCESS_HOMESERVERS: 'localhost',
          ...(override ? { LIVEKIT_CS_API_URL_OVERRIDES: `localhost=${hs.url}` } : {}),
        },
        // The test CA, the well-known port and loopback stand in for a public server on 443 (the
        // environment stays lk-jwt-service's; only the injected federation deps differ).
        override ? {} : { token: { federation: { tlsCa: [federation.certPem], wellKnownPort: federation.port, allowPrivateAddresses: true } } },
      );
      expect(membershipLine(logs).map((l) => l.msg)).toEqual([expect.stringMatching(/^membership check off: no appservice registration/)]);

      // Users of the recording; nobody is in any room (the recording's room does not exist here).
      const openIds = new Map<string, Record<string, unknown>>();
      for (const [device, localpart] of Object.entries(DEVICE_OWNER)) {
        const u = hs.model.registerUser(localpart);
        openIds.set(device, await openIdToken(composed, u.accessToken, u.userId));
      }
      expect(RUN3.filter((r) => r.path.endsWith('/sfu/get'))).toHaveLength(8);
      const answers: { path: string; device: string; status: number; json: Record<string, unknown> }[] = [];
      for (const r of RUN3) {
        const device = deviceOf(r.body);
        const body = { ...r.body, openid_token: { ...(r.body.openid_token as object), access_token: openIds.get(device)!.access_token } };
        const path = r.path.replace(/^\/bob/, '');
        answers.push({ path, device, ...(await post(bridgeUrl, path, body)) });
      }
      // A delayed leave needs the user's client-server API: without the override that is
      // `localhost`'s .well-known/matrix/client on port 443, which nothing serves here, and
      // lk-jwt-service answers exactly this.
      const expected = (r: RecordedRequest) => (override || r.body.delay_id === undefined ? 200 : 400);
      expect(answers.map((a) => [a.path, a.status])).toEqual(RUN3.map((r) => [r.path.replace(/^\/bob/, ''), expected(r)]));
      for (const a of answers.filter((x) => x.status === 200)) expect(a.json.url).toBe(sfu.wsUrl);
      for (const a of answers.filter((x) => x.status === 400)) expect(a.json).toEqual({ errcode: 'M_BAD_JSON', error: 'Unable to resolve client-server API' });
      if (override) {
        expect(coreUserinfo()).toHaveLength(RUN3.length);
        expect(federation.requests.filter((r) => r.path === USERINFO)).toEqual([]);
      } else {
        expect(federation.requests.filter((r) => r.path === USERINFO)).toHaveLength(RUN3.length);
        expect(coreUserinfo()).toEqual([]);
      }

      // brown joins with its last (duplicate) /sfu/get token that was granted, orange with its /get_token one:
      // both land in the SFU room the bridge created for the Matrix room and see each other.
      const roomId = String(RUN3[0]!.body.room);
      const brownJwt = answers.filter((a) => a.path === '/sfu/get' && a.device === 'OLJQEKKKJK' && a.status === 200).at(-1)!.json.jwt;
      const orangeJwt = answers.find((a) => a.path === '/get_token' && a.device === 'XJLQRFYKQT')!.json.jwt;
      const brown = await connect(sfu.wsUrl, String(brownJwt));
      const orange = await connect(sfu.wsUrl, String(orangeJwt));
      expect(brown.room.name).toBe(liveKitRoomAlias(roomId, SLOT));
      expect(orange.room.name).toBe(liveKitRoomAlias(roomId, SLOT));
      expect(brown.identity).toBe(legacyLiveKitIdentity('@brown-solid-snail:localhost', 'OLJQEKKKJK'));
      const getToken = RUN3.find((r) => r.path.endsWith('/get_token') && deviceOf(r.body) === 'XJLQRFYKQT')!.body.member as Record<string, string>;
      expect(orange.identity).toBe(liveKitIdentityForMember('@orange-surprised-swallow:localhost', 'XJLQRFYKQT', getToken.id!));
      await waitFor('brown and orange see each other', () => brown.room.remoteParticipants.has(orange.identity) && orange.room.remoteParticipants.has(brown.identity));
    },
  );
});

describe("with lk-jwt-service's appservice-mode environment", () => {
  it('starts without BRIDGE_HOMESERVER_URL, checks membership, and verifies OpenID at the plain-HTTP homeserver of LIVEKIT_CS_API_URL_OVERRIDES', async () => {
    const sfu = await startSfu();
    const reserved = await reserveBridge();
    const reg = testRegistration(reserved.url);
    const { composed, coreUserinfo } = await startHomeserver({ registration: reg, backoffBaseMs: 100 });
    const { hs, federation } = composed;
    const carol = hs.model.registerUser('carol');
    const alice = hs.model.registerUser('alice');
    const eve = hs.model.registerUser('eve');
    const roomId = hs.model.createRoom(carol.userId, { version: '10', invite: [alice.userId] });
    hs.model.setMembership(alice.userId, roomId, alice.userId, 'join');

    const { bridgeUrl, logs } = await startBridge(reserved, {
      LIVEKIT_URL: sfu.wsUrl,
      LIVEKIT_KEY: TEST_API_KEY,
      LIVEKIT_SECRET: TEST_API_SECRET,
      LIVEKIT_FULL_ACCESS_HOMESERVERS: 'localhost',
      LIVEKIT_AS_TOKEN: reg.as_token,
      LIVEKIT_HS_TOKEN: reg.hs_token,
      LIVEKIT_HS_SERVER_NAME: 'localhost',
      LIVEKIT_CS_API_URL_OVERRIDES: `localhost=${hs.url}`,
    });
    expect(membershipLine(logs).map((l) => l.msg)).toEqual([expect.stringMatching(/^membership check on/)]);
    expect(logs.find((l) => l.msg === 'homeserver client-server API')).toMatchObject({ url: hs.url, from: 'LIVEKIT_CS_API_URL_OVERRIDES' });

    // The recorded /sfu/get shape, for this room.
    const sfuGet = RUN3.find((r) => r.path.endsWith('/sfu/get') && r.body.delay_id === undefined)!.body;
    const ask = async (u: { userId: string; accessToken: string }) =>
      post(bridgeUrl, '/sfu/get', { ...sfuGet, room: roomId, openid_token: await openIdToken(composed, u.accessToken, u.userId) });
    const denied = await ask(eve);
    expect(denied).toEqual({ status: 403, json: { errcode: 'M_FORBIDDEN', error: 'The requesting user is not a member of the room' } });
    const granted = await ask(alice);
    expect(granted.status).toBe(200);
    expect(granted.json.url).toBe(sfu.wsUrl);
    // Both OpenID tokens were checked at the homeserver's plain-HTTP URL, none over federation.
    expect(coreUserinfo()).toHaveLength(2);
    expect(federation.requests.filter((r) => r.path === USERINFO)).toEqual([]);

    const c = await connect(sfu.wsUrl, String(granted.json.jwt));
    expect(c.room.name).toBe(liveKitRoomAlias(roomId, SLOT));
  });
});

describe('the appservice homeserver found through .well-known/matrix/client', () => {
  it('says it cannot find it yet, keeps retrying, and starts the appservice once it is found', async () => {
    const clock = createManualClock(Date.now());
    const sfu = await startSfu();
    const wellKnown = await startFakeFederationServer();
    stops.push(() => wellKnown.stop());
    const serverName = wellKnown.serverName; // 127.0.0.1:<port>: its .well-known is fetched there
    const reserved = await reserveBridge();
    const reg = testRegistration(reserved.url, serverName);
    const { composed, corePaths } = await startHomeserver({ registration: reg, serverName });
    const { bridgeUrl, logs } = await startBridge(
      reserved,
      {
        LIVEKIT_URL: sfu.wsUrl,
        LIVEKIT_KEY: TEST_API_KEY,
        LIVEKIT_SECRET: TEST_API_SECRET,
        LIVEKIT_FULL_ACCESS_HOMESERVERS: serverName,
        LIVEKIT_AS_TOKEN: reg.as_token,
        LIVEKIT_HS_TOKEN: reg.hs_token,
        LIVEKIT_HS_SERVER_NAME: serverName,
      },
      { clock, token: { federation: { tlsCa: [wellKnown.certPem], allowPrivateAddresses: true } } },
    );
    const notFound = logs.filter((l) => typeof l.msg === 'string' && l.msg.startsWith(`cannot find the client-server API of the homeserver ${serverName}`));
    expect(notFound).toHaveLength(1);
    expect(notFound[0]!.msg).toMatch(/set BRIDGE_HOMESERVER_URL .* or LIVEKIT_CS_API_URL_OVERRIDES=/);
    expect(notFound[0]!.retryInMs).toBe(1000);
    // The listener is up meanwhile, and the homeserver is not asked anything.
    expect((await fetch(`${bridgeUrl}/healthz`)).status).toBe(200);
    expect(corePaths).toEqual([]);

    clock.advance(1000);
    await waitFor('the second attempt', () => logs.filter((l) => typeof l.msg === 'string' && l.msg.startsWith('cannot find')).length === 2);
    expect(logs.filter((l) => typeof l.msg === 'string' && l.msg.startsWith('cannot find')).at(-1)!.retryInMs).toBe(2000);

    wellKnown.setWellKnownClient(composed.hs.url);
    clock.advance(2000);
    await waitFor('the homeserver found', () => logs.find((l) => l.msg === 'homeserver client-server API'));
    expect(logs.find((l) => l.msg === 'homeserver client-server API')).toMatchObject({ url: composed.hs.url, from: '.well-known/matrix/client' });
    // The appservice started: its first reconcile lists the rooms at the homeserver it found.
    await waitFor('the first reconcile', () => corePaths.includes('/_matrix/client/v3/joined_rooms'));
  });
});
