/**
 * One fake homeserver serving everything a test may want: the core (server.ts: rooms, pushes,
 * reads, MSC4140 as on 1.132), the token helper's TLS federation server (federation.ts:
 * `openid/userinfo` over HTTPS with server name `127.0.0.1:<port>`, well-known) answering for
 * every OpenID token the core mints, and the token helper's client-server pieces
 * (delayed-events.ts: MSC4502 `is_joined`, MSC4512 `fed_proxy` and the appservice proxy) behind
 * the core's port, fed from the core's model (joined members, user tokens). federation.ts and
 * delayed-events.ts are only started and called here, never changed, so the token tests that
 * use them standalone are unaffected. The core's own routes win where both serve a path
 * (delayed events, `joined_members`). Lifecycle: `startComposedHomeserver` → `stop()` stops all three.
 */
import type { Request, Response } from 'express';
import { startFakeClientServerApi, type FakeClientServerApi } from './delayed-events.ts';
import { startFakeFederationServer, type FakeFederationServer } from './federation.ts';
import { tokenOf } from './http-util.ts';
import { startFakeHomeserver, type FakeHomeserver, type FakeHomeserverOptions } from './server.ts';

export interface ComposedHomeserver {
  hs: FakeHomeserver;
  federation: FakeFederationServer;
  tokenApi: FakeClientServerApi;
  stop(): Promise<void>;
}

/** Paths the core does not serve and the token helper's piece does. */
const FORWARDED = /^\/_matrix\/(?:client\/unstable\/io\.element\.(?:msc4502|msc4512)\/|(?:client|federation)\/(?:unstable\/[^/]+|v[^/]+)\/rtc\/livekit(?:\/|$))/;

export async function startComposedHomeserver(opts: FakeHomeserverOptions): Promise<ComposedHomeserver> {
  const federation = await startFakeFederationServer();
  let tokenApi: FakeClientServerApi | undefined;
  let hs: FakeHomeserver | undefined;
  try {
    tokenApi = await startFakeClientServerApi({ serverName: opts.serverName ?? 'localhost', asToken: opts.registration.as_token });
    const api = tokenApi;
    hs = await startFakeHomeserver({
      ...opts,
      onOpenIdToken: (token, userId) => {
        federation.setUserInfoAnswer(token, { status: 200, body: { sub: userId } });
        opts.onOpenIdToken?.(token, userId);
      },
      extraRoutes: (app, ctx) => {
        app.use((req: Request, res: Response, next) => {
          if (!FORWARDED.test(req.path)) return next();
          // The piece keeps its own token table: tell it who a user token belongs to.
          const token = tokenOf(req);
          const user = token ? ctx.model.userForToken(token) : undefined;
          if (token && user) api.addUserToken(token, user.userId);
          void forward(api.url, req, res);
        });
        opts.extraRoutes?.(app, ctx);
      },
    });
    const core = hs;
    core.model.onEvent((ev) => {
      if (ev.type !== 'm.room.member' || ev.state_key === undefined) return;
      const joined = ev.content.membership === 'join';
      api.setJoined(ev.room_id, ev.state_key, joined);
      const server = ev.state_key.slice(ev.state_key.indexOf(':') + 1);
      api.setJoined(ev.room_id, server, core.model.joinedMembers(ev.room_id).some((u) => u.endsWith(`:${server}`)));
    });
  } catch (err) {
    await hs?.stop();
    await tokenApi?.stop();
    await federation.stop();
    throw err;
  }
  const core = hs;
  const api = tokenApi;
  return {
    hs: core,
    federation,
    tokenApi: api,
    async stop() {
      await core.stop();
      await api.stop();
      await federation.stop();
    },
  };
}

async function forward(base: string, req: Request, res: Response): Promise<void> {
  try {
    const headers: Record<string, string> = {};
    for (const [k, v] of Object.entries(req.headers)) if (typeof v === 'string' && !['host', 'content-length', 'connection'].includes(k)) headers[k] = v;
    const hasBody = req.method !== 'GET' && req.method !== 'HEAD' && req.body !== undefined;
    const answer = await fetch(`${base}${req.originalUrl}`, { method: req.method, headers, body: hasBody ? JSON.stringify(req.body) : undefined });
    res.status(answer.status);
    res.setHeader('Content-Type', answer.headers.get('content-type') ?? 'application/json');
    res.end(Buffer.from(await answer.arrayBuffer()));
  } catch (err) {
    res.status(502).json({ errcode: 'M_UNKNOWN', error: (err as Error).message });
  }
}
