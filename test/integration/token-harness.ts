/**
 * Runs the real token service (bridge/token) on a real bridge listener for integration tests,
 * next to the fake homeserver's TLS federation side (OpenID userinfo) and client-server side
 * (delayed events, is_joined, joined_members, fed_proxy, MSC4512 proxy). `stop()` closes all.
 * Also signs LiveKit webhooks the way the SFU does (livekit-server-sdk AccessToken + sha256).
 */
import { createHash } from 'node:crypto';
import { AccessToken } from 'livekit-server-sdk';
import { WebhookEvent, Room, ParticipantInfo, DisconnectReason } from '@livekit/protocol';
import { decodeJwt } from 'jose';
import { systemClock, type Clock } from '../../common/clock.ts';
import { createSilentLogger, createLogger } from '../../common/logger.ts';
import { createMetricsRegistry } from '../../common/metrics.ts';
import { resolveBridgeConfig, type BridgeConfig, type Env } from '../../bridge/config.ts';
import { createBridgeServer, type BridgeServer } from '../../bridge/server.ts';
import { createTokenService, tokenNotFoundHandler, type TokenService, type TokenServiceDeps } from '../../bridge/token/service.ts';
import { startFakeFederationServer, type FakeFederationServer } from '../fake-homeserver/federation.ts';
import { startFakeClientServerApi, type FakeClientServerApi } from '../fake-homeserver/delayed-events.ts';

export const LK_KEY = 'token-test-key';
export const LK_SECRET = 'token-test-secret-0123456789abcdef0123';
export const AS_TOKEN = 'as_token_for_tests';
export const HS_TOKEN = 'hs_token_for_tests';

export interface TokenHarness {
  url: string;
  config: BridgeConfig;
  fed: FakeFederationServer;
  hs: FakeClientServerApi;
  service: TokenService;
  bridge: BridgeServer;
  /** POSTs JSON (or a raw string) and returns status, headers and parsed body. */
  post(path: string, body: unknown, headers?: Record<string, string>): Promise<HttpAnswer>;
  request(method: string, path: string, init?: { body?: string; headers?: Record<string, string> }): Promise<HttpAnswer>;
  /** A user of the fake homeserver with an OpenID token and (by default) joined to `roomId`. */
  user(localpart: string, opts?: { joinedTo?: string[] }): { userId: string; openid: Record<string, unknown> };
  webhook(event: 'participant_joined' | 'participant_left' | 'participant_connection_aborted', room: string, identity: string, clientInitiated?: boolean): Promise<number>;
  stop(): Promise<void>;
}

export interface HttpAnswer {
  status: number;
  headers: Headers;
  text: string;
  json: Record<string, unknown> | undefined;
}

export interface TokenHarnessOptions {
  livekitUrl?: string;
  fullAccess?: string;
  appservice?: boolean;
  membershipCheck?: boolean;
  env?: Env;
  /** Trust the fake's self-signed certificate (default true). */
  trustCa?: boolean;
  deps?: Partial<TokenServiceDeps>;
  clock?: Clock;
  /** Reuse fakes across a simulated restart. */
  fed?: FakeFederationServer;
  hs?: FakeClientServerApi;
}

export async function startTokenHarness(opts: TokenHarnessOptions = {}): Promise<TokenHarness> {
  const fed = opts.fed ?? (await startFakeFederationServer());
  const hs = opts.hs ?? (await startFakeClientServerApi({ serverName: fed.serverName, asToken: AS_TOKEN }));
  const env: Env = {
    LIVEKIT_URL: opts.livekitUrl ?? 'ws://127.0.0.1:9',
    LIVEKIT_KEY: LK_KEY,
    LIVEKIT_SECRET: LK_SECRET,
    LIVEKIT_FULL_ACCESS_HOMESERVERS: opts.fullAccess ?? fed.serverName,
    LIVEKIT_JWT_BIND: '127.0.0.1:0',
    // The fake homeserver's federation side listens on 127.0.0.1, which the default refuses.
    BRIDGE_FEDERATION_ALLOW_PRIVATE_ADDRESSES: 'true',
    LIVEKIT_CS_API_URL_OVERRIDES: `${fed.serverName}=${hs.url}`,
    ...(opts.membershipCheck !== undefined ? { BRIDGE_MEMBERSHIP_CHECK: String(opts.membershipCheck) } : {}),
    ...(opts.appservice !== false
      ? { LIVEKIT_AS_TOKEN: AS_TOKEN, LIVEKIT_HS_TOKEN: HS_TOKEN, LIVEKIT_HS_SERVER_NAME: fed.serverName }
      : {}),
    ...opts.env,
  };
  const config = resolveBridgeConfig(env);
  const logger = process.env.TOKEN_TEST_LOG ? createLogger({ name: 'bridge', level: 'debug' }) : createSilentLogger();
  const clock = opts.clock ?? systemClock;
  const bridge = createBridgeServer({ config, logger, clock, metrics: createMetricsRegistry({ defaultMetrics: false }) });
  const service = createTokenService({
    config,
    logger,
    clock,
    metrics: bridge.metrics,
    federation: opts.trustCa === false ? {} : { tlsCa: [fed.certPem] },
    ...opts.deps,
  });
  bridge.app.use(service.router);
  bridge.app.use(tokenNotFoundHandler);
  await service.start();
  const { url } = await bridge.start();

  const request: TokenHarness['request'] = async (method, path, init = {}) => {
    const reqInit: RequestInit = { method, headers: init.headers };
    if (init.body !== undefined) reqInit.body = init.body;
    const res = await fetch(`${url}${path}`, reqInit);
    const text = await res.text();
    let json: Record<string, unknown> | undefined;
    try {
      json = JSON.parse(text) as Record<string, unknown>;
    } catch {
      json = undefined;
    }
    return { status: res.status, headers: res.headers, text, json };
  };

  return {
    url,
    config,
    fed,
    hs,
    service,
    bridge,
    request,
    post: (path, body, headers = {}) =>
      request('POST', path, {
        body: typeof body === 'string' ? body : JSON.stringify(body),
        headers: { 'Content-Type': 'application/json', ...headers },
      }),
    user(localpart, o = {}) {
      const userId = `@${localpart}:${fed.serverName}`;
      for (const room of o.joinedTo ?? []) hs.setJoined(room, userId, true);
      const token = fed.issueOpenIdToken(userId);
      return {
        userId,
        openid: { access_token: token, token_type: 'Bearer', matrix_server_name: fed.serverName, expires_in: 3600 },
      };
    },
    async webhook(event, room, identity, clientInitiated = false) {
      const ev = new WebhookEvent({
        event,
        room: new Room({ name: room }),
        participant: new ParticipantInfo({
          identity,
          disconnectReason: clientInitiated ? DisconnectReason.CLIENT_INITIATED : DisconnectReason.UNKNOWN_REASON,
        }),
        id: `EV_${Math.random().toString(36).slice(2)}`,
        createdAt: BigInt(Math.floor(Date.now() / 1000)),
      });
      const body = JSON.stringify(ev.toJson());
      const at = new AccessToken(LK_KEY, LK_SECRET, { ttl: '5m' });
      at.sha256 = createHash('sha256').update(body).digest('base64');
      const res = await fetch(`${url}/sfu_webhook`, {
        method: 'POST',
        headers: { 'Content-Type': 'application/webhook+json', Authorization: await at.toJwt() },
        body,
      });
      await res.arrayBuffer();
      return res.status;
    },
    async stop() {
      await bridge.stop();
      await service.close();
      if (!opts.hs) await hs.stop();
      if (!opts.fed) await fed.stop();
    },
  };
}

export function claimsOf(jwt: unknown): Record<string, unknown> & { video: Record<string, unknown> } {
  return decodeJwt(String(jwt)) as Record<string, unknown> & { video: Record<string, unknown> };
}
