/**
 * The fake homeserver's client-server pieces the token service talks to, as a standalone plain
 * HTTP server (the fake homeserver core can compose it): MSC4140 delayed-event management
 * (`POST …/delayed_events/{id}/restart|send|cancel`, unauthenticated as in Synapse, `{}` or
 * 404 M_NOT_FOUND "Delayed event not found" as recorded in fixtures/synapse-1.132/client/07b),
 * with per-(id, action) scripted answers for 200/404/429 Retry-After/500; the per-id look-up
 * lk-jwt-service line B calls; MSC4502 `is_joined` (as_token, param checks), `joined_members`;
 * MSC4512 `fed_proxy` to registered destinations; and the MSC4512 appservice proxy itself:
 * `…/rtc/livekit/…` client-server requests with a user access token are forwarded unchanged to
 * `proxy_url` with `X-Matrix-User-Identifier` and `Authorization: Bearer <hs_token>`; federation
 * ones carry `X-Matrix-Origin` (taken from the test's `X-Test-Origin` header in place of a
 * signature check). Every request is recorded.
 */
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { randomBytes } from 'node:crypto';

export interface RecordedRequest {
  method: string;
  path: string;
  query: Record<string, string>;
  authorization: string | undefined;
  body: unknown;
  at: number;
}

export interface ScriptedAnswer {
  status: number;
  body?: unknown;
  headers?: Record<string, string>;
}

export interface DelayedEventInfo {
  delayId: string;
  roomId: string;
  delayMs: number;
  userId: string;
}

export interface FakeClientServerApi {
  readonly url: string;
  readonly serverName: string;
  readonly requests: RecordedRequest[];
  scheduleDelayedEvent(e: Omit<DelayedEventInfo, 'delayId'> & { delayId?: string }): string;
  hasDelayedEvent(delayId: string): boolean;
  /** Answers for the next calls of (delayId, action), in order; then the default behaviour. */
  script(delayId: string, action: 'restart' | 'send' | 'cancel', answers: ScriptedAnswer[]): void;
  /** Delayed-event actions seen so far, as `<id>:<action>`. */
  actions(): string[];
  setJoined(roomId: string, who: string, joined: boolean): void;
  /** false: is_joined answers 404 M_UNRECOGNIZED like a homeserver without MSC4502. */
  setMsc4502(enabled: boolean): void;
  setIsJoinedFailure(status: number | undefined): void;
  /** Status the per-id delayed-event look-up fails with (undefined = answer normally). */
  setLookupFailure(status: number | undefined): void;
  addUserToken(accessToken: string, userId: string): void;
  /** MSC4512: where `…/rtc/livekit/…` requests are proxied. */
  setAppserviceProxy(proxyUrl: string, hsToken: string): void;
  /** fed_proxy destination: another server's appservice proxy. */
  addFederationDestination(serverName: string, proxyUrl: string, hsToken: string): void;
  stop(): Promise<void>;
}

const MSC4140 = '/_matrix/client/unstable/org.matrix.msc4140';
const PROXY_CS = /^\/_matrix\/client\/(?:unstable\/[^/]+|v[^/]+)\/rtc\/livekit(\/.*)?$/;
const PROXY_SS = /^\/_matrix\/federation\/(?:unstable\/[^/]+|v[^/]+)\/rtc\/livekit(\/.*)?$/;

function send(res: ServerResponse, status: number, body: unknown, headers: Record<string, string> = {}): void {
  res.writeHead(status, { 'Content-Type': 'application/json', ...headers });
  res.end(body === undefined ? '' : JSON.stringify(body));
}

async function readJson(req: IncomingMessage): Promise<unknown> {
  const chunks: Buffer[] = [];
  for await (const c of req as AsyncIterable<Buffer>) chunks.push(c);
  const text = Buffer.concat(chunks).toString('utf8');
  if (!text) return undefined;
  try {
    return JSON.parse(text);
  } catch {
    return text;
  }
}

const bearer = (req: IncomingMessage) => /^Bearer (.+)$/.exec(req.headers.authorization ?? '')?.[1];

async function forward(url: string, method: string, headers: Record<string, string>, body: unknown) {
  const res = await fetch(url, {
    method,
    headers: { 'Content-Type': 'application/json', ...headers },
    body: body === undefined || method === 'GET' ? undefined : JSON.stringify(body),
  });
  const text = await res.text();
  let content: unknown;
  try {
    content = JSON.parse(text);
  } catch {
    content = text;
  }
  return { status: res.status, content, headers: res.headers };
}

export async function startFakeClientServerApi(opts: { serverName?: string; asToken: string }): Promise<FakeClientServerApi> {
  const requests: RecordedRequest[] = [];
  const delayed = new Map<string, DelayedEventInfo>();
  const scripts = new Map<string, ScriptedAnswer[]>();
  const joined = new Map<string, boolean>();
  const userTokens = new Map<string, string>();
  const destinations = new Map<string, { url: string; hsToken: string }>();
  const actionLog: string[] = [];
  let msc4502 = true;
  let isJoinedFailure: number | undefined;
  let lookupFailure: number | undefined;
  let proxy: { url: string; hsToken: string } | undefined;
  let serverName = opts.serverName ?? 'localhost';

  async function handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const url = new URL(req.url ?? '/', 'http://fake');
    const method = req.method ?? 'GET';
    const body = await readJson(req);
    const query = Object.fromEntries(url.searchParams);
    requests.push({ method, path: url.pathname, query, authorization: req.headers.authorization, body, at: Date.now() });
    const p = url.pathname;

    // MSC4512 appservice proxy (client-server and federation).
    const cs = PROXY_CS.exec(p);
    const ss = PROXY_SS.exec(p);
    if (cs || ss) {
      if (!proxy) return send(res, 404, { errcode: 'M_UNRECOGNIZED', error: 'Unrecognized request' });
      const headers: Record<string, string> = { Authorization: `Bearer ${proxy.hsToken}` };
      if (cs) {
        const token = bearer(req);
        const user = token ? userTokens.get(token) : undefined;
        if (!token) return send(res, 401, { errcode: 'M_MISSING_TOKEN', error: 'Missing access token.' });
        if (!user) return send(res, 401, { errcode: 'M_UNKNOWN_TOKEN', error: 'Invalid access token passed.' });
        headers['X-Matrix-User-Identifier'] = user;
      } else {
        const origin = req.headers['x-test-origin'];
        if (typeof origin !== 'string') return send(res, 401, { errcode: 'M_UNAUTHORIZED', error: 'Missing signature' });
        headers['X-Matrix-Origin'] = origin;
      }
      const answer = await forward(`${proxy.url}${url.pathname}${url.search}`, method, headers, body);
      return send(res, answer.status, answer.content);
    }

    const action = new RegExp(`^${MSC4140}/delayed_events/([^/]+)/(restart|send|cancel)$`).exec(p);
    if (action && method === 'POST') {
      const id = decodeURIComponent(action[1]!);
      const act = action[2]!;
      actionLog.push(`${id}:${act}`);
      const queued = scripts.get(`${id}:${act}`);
      const scripted = queued?.shift();
      if (scripted) return send(res, scripted.status, scripted.body ?? {}, scripted.headers);
      if (!delayed.has(id)) return send(res, 404, { errcode: 'M_NOT_FOUND', error: 'Delayed event not found' });
      if (act !== 'restart') delayed.delete(id);
      return send(res, 200, {});
    }
    const lookup = new RegExp(`^${MSC4140}/delayed_events/([^/]+)$`).exec(p);
    if (lookup && method === 'GET') {
      if (bearer(req) !== opts.asToken) return send(res, 401, { errcode: 'M_UNKNOWN_TOKEN', error: 'Unrecognised access token.' });
      if (lookupFailure) return send(res, lookupFailure, { errcode: 'M_UNKNOWN', error: 'Bad gateway' });
      const e = delayed.get(decodeURIComponent(lookup[1]!));
      if (!e || (query.user_id && query.user_id !== e.userId)) {
        return send(res, 404, { errcode: 'M_NOT_FOUND', error: 'Delayed event not found' });
      }
      return send(res, 200, { delay_id: e.delayId, room_id: e.roomId, delay: e.delayMs, running_since: Date.now(), content: {} });
    }

    const isJoined = /^\/_matrix\/client\/unstable\/io\.element\.msc4502\/rooms\/([^/]+)\/is_joined$/.exec(p);
    if (isJoined && method === 'GET') {
      if (!msc4502) return send(res, 404, { errcode: 'M_UNRECOGNIZED', error: 'Unrecognized request' });
      if (bearer(req) !== opts.asToken) return send(res, 403, { errcode: 'M_FORBIDDEN', error: 'Application service lacks the required scope' });
      if (isJoinedFailure) return send(res, isJoinedFailure, { errcode: 'M_UNKNOWN', error: 'Internal server error' });
      const roomId = decodeURIComponent(isJoined[1]!);
      const who = query.mxid ?? query.server_name;
      if ((query.mxid === undefined) === (query.server_name === undefined)) {
        return send(res, 400, { errcode: 'M_MISSING_PARAM', error: 'Exactly one of mxid or server_name is required' });
      }
      if (!roomId.startsWith('!')) return send(res, 400, { errcode: 'M_INVALID_PARAM', error: 'Invalid room id' });
      return send(res, 200, { joined: joined.get(`${roomId}|${who}`) ?? false });
    }

    const members = /^\/_matrix\/client\/v3\/rooms\/([^/]+)\/joined_members$/.exec(p);
    if (members && method === 'GET') {
      if (bearer(req) !== opts.asToken) return send(res, 401, { errcode: 'M_UNKNOWN_TOKEN', error: 'Unrecognised access token.' });
      if (isJoinedFailure) return send(res, isJoinedFailure, { errcode: 'M_UNKNOWN', error: 'Internal server error' });
      const roomId = decodeURIComponent(members[1]!);
      const out: Record<string, { avatar_url: null; display_name: string }> = {};
      for (const [key, v] of joined) {
        const [room, who] = key.split('|') as [string, string];
        if (room === roomId && v && who.startsWith('@')) out[who] = { avatar_url: null, display_name: who.slice(1, who.indexOf(':')) };
      }
      return send(res, 200, { joined: out });
    }

    if (p === '/_matrix/client/unstable/io.element.msc4512/appservice/fed_proxy' && method === 'POST') {
      if (bearer(req) !== opts.asToken) return send(res, 401, { errcode: 'M_UNKNOWN_TOKEN', error: 'Unrecognised access token.' });
      const b = body as { destination?: string; method?: string; path?: string; body?: unknown };
      const dest = b.destination ? destinations.get(b.destination) : undefined;
      if (!dest) return send(res, 502, { errcode: 'M_UNKNOWN', error: 'Failed to reach destination' });
      const answer = await forward(`${dest.url}${b.path}`, b.method ?? 'POST', { 'X-Matrix-Origin': serverName, Authorization: `Bearer ${dest.hsToken}` }, b.body);
      return send(res, 200, { status: answer.status, content: answer.content });
    }

    send(res, 404, { errcode: 'M_UNRECOGNIZED', error: 'Unrecognized request' });
  }

  const server: Server = createServer((req, res) => {
    handle(req, res).catch((err: unknown) => send(res, 500, { errcode: 'M_UNKNOWN', error: String(err) }));
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => resolve());
  });
  const addr = server.address();
  const port = typeof addr === 'object' && addr ? addr.port : 0;
  serverName = opts.serverName ?? `127.0.0.1:${port}`;

  return {
    url: `http://127.0.0.1:${port}`,
    get serverName() {
      return serverName;
    },
    requests,
    scheduleDelayedEvent(e) {
      const delayId = e.delayId ?? `syd_${randomBytes(15).toString('base64url').replace(/[^A-Za-z]/g, 'x').slice(0, 20)}`;
      delayed.set(delayId, { ...e, delayId });
      return delayId;
    },
    hasDelayedEvent: (id) => delayed.has(id),
    script(delayId, action, answers) {
      const key = `${delayId}:${action}`;
      scripts.set(key, [...(scripts.get(key) ?? []), ...answers]);
    },
    actions: () => [...actionLog],
    setJoined(roomId, who, v) {
      joined.set(`${roomId}|${who}`, v);
    },
    setLookupFailure(status) {
      lookupFailure = status;
    },
    setMsc4502(enabled) {
      msc4502 = enabled;
    },
    setIsJoinedFailure(status) {
      isJoinedFailure = status;
    },
    addUserToken(token, userId) {
      userTokens.set(token, userId);
    },
    setAppserviceProxy(url, hsToken) {
      proxy = { url: url.replace(/\/+$/, ''), hsToken };
    },
    addFederationDestination(name, url, hsToken) {
      destinations.set(name, { url: url.replace(/\/+$/, ''), hsToken });
    },
    async stop() {
      await new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
      });
    },
  };
}
