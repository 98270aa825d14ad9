/**
 * The end-to-end world of the bridge tests: our SFU (sfu/server.ts, `room.auto_create: false`,
 * webhooks to the bridge), the composed fake homeserver (core pushing transactions, TLS
 * federation userinfo, the token-service pieces) with a Matrix room where carol (admin), alice
 * and bob are joined, and the whole bridge process as bridge/main.ts builds it (`createBridge`:
 * appservice + token service on one listener), with the memory or the Redis store. Users get
 * their LiveKit tokens from the bridge's own `/sfu/get` and `/get_token` with OpenID tokens the
 * fake homeserver minted and verified over TLS. The token service reaches the client-server API
 * of `localhost` at the token helper's piece (path-form delayed events) by default, or at the
 * core itself (`csApi: 'core'`: delayed events as Synapse 1.132 serves them); the core's requests
 * are recorded either way. Optionally the homeserver and the bridge (and the SFU) run on one
 * manual clock, so a test moves their timers instead of sleeping. Every server it starts is
 * stopped by `stop()`.
 */
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Redis } from 'ioredis';
import { RoomServiceClient } from 'livekit-server-sdk';
import { systemClock, type ManualClock } from '../../common/clock.ts';
import { createLogger, createSilentLogger, type Logger } from '../../common/logger.ts';
import { createBridge, type Bridge } from '../../bridge/bridge.ts';
import { resolveBridgeConfig, type Env } from '../../bridge/config.ts';
import { liveKitRoomAlias } from '../../bridge/token/names.ts';
import { startComposedHomeserver, type ComposedHomeserver } from '../fake-homeserver/compose.ts';
import { testRegistration } from '../fake-homeserver/server.ts';
import type { AppserviceRegistration } from '../fake-homeserver/appservice-pusher.ts';
import type { HomeserverModel } from '../fake-homeserver/model.ts';
import type { MatrixRtcProfile } from '../fake-homeserver/matrix-rtc.ts';
import { reservePort } from '../support/ports.ts';
import { connectRtcNode, type RtcNodeClient } from '../support/rtc-node.ts';
import { startTestSfu, TEST_API_KEY, TEST_API_SECRET, type TestSfu } from '../support/sfu-harness.ts';
import { waitFor } from '../support/wait.ts';
import { afterAll, afterEach, beforeAll } from 'vitest';
import { startRedisServer, type RunningRedis } from '../support/redis-server.ts';

export const CALL = 'org.matrix.msc3401.call.member';
export const SLOT = 'm.call#ROOM';

export type StoreKind = 'memory' | 'redis';

export function joinContent(deviceId: string, userId: string, extra: Record<string, unknown> = {}): Record<string, unknown> {
  return {
    application: 'm.call',
    call_id: '',
    scope: 'm.room',
    device_id: deviceId,
    membershipID: `${userId}:${deviceId}`,
    expires: 14_400_000,
    'm.call.intent': 'video',
    focus_active: { type: 'livekit', focus_selection: 'multi_sfu' },
    foci_preferred: [{ type: 'livekit', livekit_service_url: 'https://rtc.example.org/livekit/jwt' }],
    ...extra,
  };
}

export const stateKeyOf = (userId: string, deviceId: string): string => `_${userId}_${deviceId}_m.call`;

/** Rejects when `p` has not settled within `ms` (the "within 1 s" bound). */
export async function within<T>(ms: number, p: Promise<T>, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  try {
    return await Promise.race([
      p,
      new Promise<never>((_, reject) => {
        timer = setTimeout(() => reject(new Error(`${what}: not within ${ms} ms`)), Math.max(0, ms));
      }),
    ]);
  } finally {
    clearTimeout(timer);
  }
}

/** carol (room admin), alice and bob; `makeRoom()` makes a room all three are joined to. */
export function seedUsers(model: HomeserverModel): { carol: string; alice: string; bob: string; makeRoom(): string } {
  const carol = model.registerUser('carol').userId;
  const alice = model.registerUser('alice').userId;
  const bob = model.registerUser('bob').userId;
  const makeRoom = () => {
    const id = model.createRoom(carol, { version: '10', invite: [alice, bob], power_level_content_override: { events: { [CALL]: 0 }, users: { [carol]: 100 } } });
    model.setMembership(alice, id, alice, 'join');
    model.setMembership(bob, id, bob, 'join');
    return id;
  };
  return { carol, alice, bob, makeRoom };
}

export interface WorldOptions {
  kind: StoreKind;
  redisUrl?: string;
  /** Whether alice's homeserver is full-access (the token service then creates SFU rooms). */
  fullAccess?: boolean;
  graceSeconds?: number;
  /** The `{}` call-leave grace (BRIDGE_LEAVE_GRACE_SECONDS); default the bridge's own (10 s). */
  leaveGraceSeconds?: number;
  /**
   * A manual clock for the homeserver (event origin_server_ts, delayed events) and the bridge's
   * timers; with `sfuOnClock` the SFU's timers (room empty/departure timeouts) run on it too.
   */
  clock?: ManualClock;
  sfuOnClock?: boolean;
  /** Where the token service sends client-server calls for `localhost`; default 'token-helper'. */
  csApi?: 'token-helper' | 'core';
  /** false: the registration has no url, so the homeserver never pushes (the bridge only reconciles). */
  pushes?: boolean;
  /** Newer-Synapse MatrixRTC settings of the fake homeserver (sticky events, /rtc/transports). */
  matrixRtc?: MatrixRtcProfile;
  /** Runs after the SFU and the seeded homeserver are up and before the bridge starts. */
  beforeBridge?: (pre: PreBridge) => Promise<void>;
  /** More bridge environment (wins over the world's own). */
  env?: Env;
  /** Loggers of our two processes (default silent, or stdout with BRIDGE_TEST_LOG). */
  loggers?: { sfu: Logger; bridge: Logger };
}

/** What exists before the bridge starts. */
export interface PreBridge {
  sfu: TestSfu;
  composed: ComposedHomeserver;
  roomService: RoomServiceClient;
  carol: string;
  alice: string;
  bob: string;
  roomId: string;
  makeRoom(): string;
  /** An rtc-node client, disconnected by the world's `stop()`. */
  connect(jwt: string): Promise<RtcNodeClient>;
}

/** A client-server request the core received (`csApi: 'core'`). */
export interface CoreRequest {
  method: string;
  path: string;
  query: Record<string, unknown>;
  authorization: string | undefined;
  body: unknown;
}

export interface World {
  sfu: TestSfu;
  composed: ComposedHomeserver;
  reg: AppserviceRegistration;
  bridge: Bridge;
  bridgeUrl: string;
  roomService: RoomServiceClient;
  carol: string;
  alice: string;
  bob: string;
  roomId: string;
  sfuRoom: string;
  /** Another Matrix room alice and bob are joined to. */
  makeRoom(): string;
  /** Client-server requests the core received. */
  coreRequests: CoreRequest[];
  /** A user's access token on the fake homeserver (made on first use). */
  accessToken(userId: string): string;
  sfuRooms(): Promise<string[]>;
  sfuIdentities(room: string): Promise<string[]>;
  /** Waits until the homeserver has pushed the event and the bridge answered 2xx. */
  pushed(eventId: string): Promise<void>;
  openId(userId: string): Promise<Record<string, unknown>>;
  sfuGet(userId: string, roomId: string, deviceId: string): Promise<{ status: number; json: Record<string, unknown> }>;
  getToken(userId: string, roomId: string, deviceId: string, extra?: Record<string, unknown>): Promise<{ status: number; json: Record<string, unknown> }>;
  connect(jwt: string): Promise<RtcNodeClient>;
  stop(): Promise<void>;
}

/**
 * What every e2e file needs, registered by calling this once at its top level: one real Redis
 * for the file, and `start(opts)`, which starts a world with that Redis's URL and stops it after
 * the test that started it.
 */
export function worldPerTest(): { start(opts: Omit<WorldOptions, 'redisUrl'>): Promise<World> } {
  let redis: RunningRedis | undefined;
  let current: World | undefined;
  beforeAll(async () => {
    redis = await startRedisServer();
  });
  afterAll(async () => {
    await redis?.stop();
  });
  afterEach(async () => {
    await current?.stop();
    current = undefined;
  });
  return {
    async start(opts) {
      if (!redis) throw new Error('worldPerTest: start() outside a test');
      current = await startWorld({ ...opts, redisUrl: redis.url });
      return current;
    },
  };
}

export async function startWorld(opts: WorldOptions): Promise<World> {
  const stops: (() => Promise<unknown>)[] = [];
  const stop = async () => {
    while (stops.length) await stops.pop()!().catch(() => undefined);
  };
  try {
    // Held until the bridge listens: the SFU and the homeserver start first with its URL.
    const reserved = await reservePort();
    stops.push(() => reserved.release());
    const bridgePort = reserved.port;
    const bridgeUrl = `http://127.0.0.1:${bridgePort}`;
    const sfu = await startTestSfu({
      ...(opts.clock && opts.sfuOnClock ? { clock: opts.clock } : {}),
      room: { auto_create: false },
      webhook: { api_key: TEST_API_KEY, urls: [`${bridgeUrl}/sfu_webhook`] },
      ...(opts.loggers ? { logger: opts.loggers.sfu } : {}),
    });
    const sfuClock = opts.clock && opts.sfuOnClock ? opts.clock : undefined;
    stops.push(async () => {
      const stopping = sfu.stop();
      if (!sfuClock) return await stopping;
      // The SFU's shutdown waits on its clock (webhook drain): keep that clock moving until done.
      const ticking = setInterval(() => sfuClock.advance(1000), 10);
      try {
        await stopping;
      } finally {
        clearInterval(ticking);
      }
    });
    const reg = testRegistration(opts.pushes === false ? null : bridgeUrl);
    const coreRequests: CoreRequest[] = [];
    const composed = await startComposedHomeserver({
      registration: reg,
      backoffBaseMs: 100,
      matrixRtc: opts.matrixRtc,
      ...(opts.clock ? { clock: opts.clock } : {}),
      // Every request the core receives is recorded (delayed events in `csApi: 'core'`, and the
      // identities reconcile reads state as).
      extraRoutes: (app) => {
        app.use((req, _res, next) => {
          const auth = req.headers.authorization;
          coreRequests.push({ method: req.method, path: req.path, query: { ...req.query }, authorization: typeof auth === 'string' ? auth : undefined, body: req.body });
          next();
        });
      },
    });
    stops.push(() => composed.stop());
    const { hs, federation, tokenApi } = composed;
    federation.setWellKnownServer(`127.0.0.1:${federation.port}`);

    const { carol, alice, bob, makeRoom } = seedUsers(hs.model);
    const roomId = makeRoom();

    const dir = mkdtempSync(join(tmpdir(), 'bridge-e2e-'));
    stops.push(async () => rmSync(dir, { recursive: true, force: true }));
    const regFile = join(dir, 'registration.yaml');
    writeFileSync(regFile, JSON.stringify(reg));
    if (opts.kind === 'redis') {
      const r = new Redis(opts.redisUrl!);
      await r.flushdb();
      r.disconnect();
    }
    const env: Env = {
      LIVEKIT_URL: sfu.wsUrl,
      LIVEKIT_KEY: TEST_API_KEY,
      LIVEKIT_SECRET: TEST_API_SECRET,
      LIVEKIT_FULL_ACCESS_HOMESERVERS: opts.fullAccess ? hs.serverName : 'nobody.invalid',
      LIVEKIT_JWT_BIND: `127.0.0.1:${bridgePort}`,
      // Without an override the token service uses BRIDGE_HOMESERVER_URL for its own server.
      ...(opts.csApi === 'core' ? {} : { LIVEKIT_CS_API_URL_OVERRIDES: `${hs.serverName}=${tokenApi.url}` }),
      LIVEKIT_AS_REGISTRATION_FILE: regFile,
      LIVEKIT_HS_SERVER_NAME: hs.serverName,
      BRIDGE_HOMESERVER_URL: hs.url,
      BRIDGE_ROOM_DELETE_GRACE_SECONDS: String(opts.graceSeconds ?? 30),
      ...(opts.leaveGraceSeconds !== undefined ? { BRIDGE_LEAVE_GRACE_SECONDS: String(opts.leaveGraceSeconds) } : {}),
      BRIDGE_RECONCILE_INTERVAL_SECONDS: '0',
      // The fake homeserver's federation side is on loopback, which the default refuses.
      BRIDGE_FEDERATION_ALLOW_PRIVATE_ADDRESSES: 'true',
      ...(opts.kind === 'redis' ? { LIVEKIT_REDIS_URL: opts.redisUrl } : {}),
      ...opts.env,
    };
    const roomService = new RoomServiceClient(sfu.url, TEST_API_KEY, TEST_API_SECRET);
    const clients: RtcNodeClient[] = [];
    const disconnectAll = async () => {
      for (const c of clients.splice(0)) await c.disconnect();
    };
    stops.push(disconnectAll);
    const connect = async (jwt: string) => {
      const c = await connectRtcNode(sfu.wsUrl, jwt);
      clients.push(c);
      return c;
    };
    await opts.beforeBridge?.({ sfu, composed, roomService, carol, alice, bob, roomId, makeRoom, connect });

    const logger = opts.loggers?.bridge ?? (process.env.BRIDGE_TEST_LOG ? createLogger({ name: 'bridge', level: 'debug' }) : createSilentLogger());
    const bridge = createBridge({
      config: resolveBridgeConfig(env),
      logger,
      clock: opts.clock ?? systemClock,
      // `localhost` delegates to the TLS federation listener through its .well-known, fetched
      // on the listener's port instead of 443.
      token: { federation: { tlsCa: [federation.certPem], wellKnownPort: federation.port } },
    });
    await reserved.release();
    await bridge.start();
    stops.push(() => bridge.stop());
    // Clients leave before the bridge stops, as in a real shutdown.
    stops.push(disconnectAll);
    if (opts.pushes !== false) {
      await waitFor('set-up events delivered', () => hs.pusher.pendingCount() === 0 && !hs.pusher.isDown() && hs.pusher.attempts.length > 0);
    }

    const post = async (path: string, body: unknown) => {
      const res = await fetch(`${bridgeUrl}${path}`, { method: 'POST', headers: { 'Content-Type': 'application/json' }, body: JSON.stringify(body) });
      return { status: res.status, json: (await res.json().catch(() => ({}))) as Record<string, unknown> };
    };
    const accessTokens = new Map<string, string>();
    const accessToken = (userId: string) => {
      let token = accessTokens.get(userId);
      if (!token) accessTokens.set(userId, (token = hs.model.registerUser(userId.slice(1, userId.indexOf(':'))).accessToken));
      return token;
    };
    const openId = async (userId: string) => {
      const token = accessToken(userId);
      const res = await fetch(`${hs.url}/_matrix/client/v3/user/${encodeURIComponent(userId)}/openid/request_token`, {
        method: 'POST',
        headers: { Authorization: `Bearer ${token}`, 'Content-Type': 'application/json' },
        body: '{}',
      });
      return (await res.json()) as Record<string, unknown>;
    };

    return {
      sfu,
      composed,
      reg,
      bridge,
      bridgeUrl,
      roomService,
      carol,
      alice,
      bob,
      roomId,
      sfuRoom: liveKitRoomAlias(roomId, SLOT),
      makeRoom,
      coreRequests,
      accessToken,
      sfuRooms: async () => (await roomService.listRooms()).map((r) => r.name),
      sfuIdentities: async (room) => {
        try {
          return (await roomService.listParticipants(room)).map((p) => p.identity);
        } catch {
          return [];
        }
      },
      async pushed(eventId) {
        await waitFor(`push of ${eventId}`, () => hs.pusher.attempts.some((a) => a.ok && a.eventIds.includes(eventId)), { intervalMs: 2 });
      },
      openId,
      sfuGet: async (userId, room, deviceId) => post('/sfu/get', { room, openid_token: await openId(userId), device_id: deviceId }),
      getToken: async (userId, room, deviceId, extra = {}) =>
        post('/get_token', {
          room_id: room,
          slot_id: SLOT,
          openid_token: await openId(userId),
          member: { id: `${userId}:${deviceId}`, claimed_user_id: userId, claimed_device_id: deviceId },
          ...extra,
        }),
      connect,
      stop,
    };
  } catch (err) {
    await stop();
    throw err;
  }
}
