/**
 * The bridge's one client of Matrix client-server APIs, used by both halves. The appservice
 * talks to its own homeserver (`createAppserviceClient`: bound to `homeserver_url` and the
 * `as_token`, optionally masquerading with `?user_id=`): the appservice ping, `/joined_rooms`,
 * `/joined_members`, `/state`, for reconcile. The token service talks to whichever server a
 * request concerns (`createHomeserverClient`: the client-server URL per call): the MSC4140
 * delayed-event actions (`restart`/`send`, 5 s) in the path form `…/delayed_events/{id}/<action>`
 * (no auth in legacy mode; `Bearer as_token` + `?user_id=` in appservice mode) or the body form
 * `…/delayed_events/{id}` `{"action"}` Synapse 1.132 still needs (always authenticated; an
 * unknown endpoint is reported as its own outcome so the caller can switch forms) and look-up, MSC4502 `is_joined`, `joined_members` and
 * the MSC4512 `fed_proxy`. Both share one request primitive (injected `fetch`, real-time timeout
 * per call) and one error type, `HomeserverError` (HTTP status, or undefined when the server was
 * not reached, and the Matrix errcode), so callers can tell "no" from "unknown".
 */

export type Fetch = typeof globalThis.fetch;

export class HomeserverError extends Error {
  /** HTTP status; undefined when no answer arrived (connection failure, timeout). */
  readonly status: number | undefined;
  readonly errcode: string;
  constructor(status: number | undefined, errcode: string, message: string) {
    super(message);
    this.name = 'HomeserverError';
    this.status = status;
    this.errcode = errcode;
  }
}

interface Answer {
  status: number;
  headers: Headers;
  /** Parsed body; undefined when empty or not JSON. */
  json: unknown;
  text: string;
}

interface RequestOptions {
  method?: string;
  /** Sent as `Authorization: Bearer`. */
  token?: string;
  body?: unknown;
  timeoutMs: number;
}

/** One HTTP exchange; throws HomeserverError (status undefined) only when no answer arrived. */
async function request(doFetch: Fetch, url: string, opts: RequestOptions): Promise<Answer> {
  const method = opts.method ?? 'GET';
  let res: Response;
  try {
    res = await doFetch(url, {
      method,
      headers: {
        ...(opts.token !== undefined ? { Authorization: `Bearer ${opts.token}` } : {}),
        ...(opts.body !== undefined ? { 'Content-Type': 'application/json' } : {}),
      },
      body: opts.body !== undefined ? JSON.stringify(opts.body) : undefined,
      signal: AbortSignal.timeout(opts.timeoutMs),
    });
  } catch (err) {
    throw new HomeserverError(undefined, 'M_CONNECTION_FAILED', `${method} ${url.replace(/\?.*/, '')} failed: ${(err as Error).message}`);
  }
  const text = await res.text().catch(() => '');
  let json: unknown;
  try {
    json = text ? JSON.parse(text) : undefined;
  } catch {
    json = undefined;
  }
  return { status: res.status, headers: res.headers, json, text };
}

const isOk = (a: Answer): boolean => a.status >= 200 && a.status < 300;

/** The HomeserverError for a non-2xx answer, with the server's errcode when it gave one. */
function errorOf(what: string, a: Answer): HomeserverError {
  const e = a.json as { errcode?: unknown; error?: unknown } | undefined;
  const errcode = typeof e?.errcode === 'string' ? e.errcode : 'M_UNKNOWN';
  const text = typeof e?.error === 'string' ? e.error : a.text.slice(0, 200);
  return new HomeserverError(a.status, errcode, `${what} answered ${a.status}${text ? `: ${text}` : ''}`);
}

/** `/joined_members` → the joined user ids. */
async function joinedMembersAt(doFetch: Fetch, base: string, token: string, roomId: string, asUser?: string): Promise<string[]> {
  const q = asUser ? `?user_id=${encodeURIComponent(asUser)}` : '';
  const a = await request(doFetch, `${base}/_matrix/client/v3/rooms/${encodeURIComponent(roomId)}/joined_members${q}`, { token, timeoutMs: 30_000 });
  if (!isOk(a)) throw errorOf('joined_members', a);
  const joined = (a.json as { joined?: unknown } | undefined)?.joined;
  if (typeof joined !== 'object' || joined === null) throw new HomeserverError(a.status, 'M_BAD_JSON', 'joined_members answer has no "joined" map');
  return Object.keys(joined);
}

// ---------------------------------------------------------------------------------------------
// The appservice's own homeserver.

export interface AppserviceClient {
  ping(appserviceId: string, transactionId?: string): Promise<{ durationMs: number }>;
  joinedRooms(asUser?: string): Promise<string[]>;
  joinedMembers(roomId: string, asUser?: string): Promise<string[]>;
  roomState(roomId: string, asUser?: string): Promise<unknown[]>;
}

export interface AppserviceClientDeps {
  baseUrl: string;
  asToken: string;
  fetch?: Fetch;
  timeoutMs?: number;
}

export function createAppserviceClient(deps: AppserviceClientDeps): AppserviceClient {
  const base = deps.baseUrl.replace(/\/+$/, '');
  const doFetch = deps.fetch ?? globalThis.fetch;
  const timeoutMs = deps.timeoutMs ?? 30_000;
  const enc = encodeURIComponent;

  /** A JSON answer from a 2xx, else HomeserverError. */
  async function call(method: string, path: string, asUser: string | undefined, body?: unknown): Promise<unknown> {
    const q = asUser ? `?user_id=${enc(asUser)}` : '';
    const a = await request(doFetch, base + path + q, { method, token: deps.asToken, body, timeoutMs });
    if (!isOk(a)) throw errorOf(`${method} ${path}`, a);
    if (a.json === undefined) throw new HomeserverError(a.status, 'M_NOT_JSON', `${method} ${path}: response is not JSON`);
    return a.json;
  }

  return {
    async ping(appserviceId, transactionId) {
      const r = (await call('POST', `/_matrix/client/v1/appservice/${enc(appserviceId)}/ping`, undefined, transactionId ? { transaction_id: transactionId } : {})) as {
        duration_ms?: number;
      };
      return { durationMs: r.duration_ms ?? 0 };
    },
    async joinedRooms(asUser) {
      const r = (await call('GET', '/_matrix/client/v3/joined_rooms', asUser)) as { joined_rooms?: unknown };
      if (!Array.isArray(r.joined_rooms)) throw new HomeserverError(200, 'M_BAD_JSON', 'joined_rooms: no joined_rooms array');
      return r.joined_rooms.filter((x): x is string => typeof x === 'string');
    },
    joinedMembers: (roomId, asUser) => joinedMembersAt(doFetch, base, deps.asToken, roomId, asUser),
    async roomState(roomId, asUser) {
      const r = await call('GET', `/_matrix/client/v3/rooms/${enc(roomId)}/state`, asUser);
      if (!Array.isArray(r)) throw new HomeserverError(200, 'M_BAD_JSON', 'state: not an array');
      return r;
    },
  };
}

// ---------------------------------------------------------------------------------------------
// Any server's client-server API, for the token service.

export type DelayedEventAction = 'restart' | 'send';

/**
 * How a delayed-event action is addressed: `path` = `POST …/delayed_events/{id}/<action>` `{}`
 * (MSC4140 as revised; unauthenticated), `body` = `POST …/delayed_events/{id}` `{"action"}`
 * (the legacy form, the only one Synapse 1.132 serves; needs a user's credential).
 */
export type DelayedEventForm = 'path' | 'body';

/** Outcome of one delayed-event action attempt. */
export type ActionOutcome =
  | { kind: 'ok' }
  | { kind: 'not_found'; status: number }
  /** The server does not know this form's endpoint (404/405 M_UNRECOGNIZED), as opposed to the id. */
  | { kind: 'unrecognized'; status: number }
  | { kind: 'retry'; status: number | undefined; retryAfterMs?: number; reason: string };

/** Appservice identity assertion for delayed-event calls (MSC4195 mode). */
export interface AsIdentity {
  asToken: string;
  userId: string;
}

export interface DelayedEventLookup {
  roomId: string;
  delayMs: number;
}

export interface HomeserverClient {
  /** Default form `path`; the `body` form is only useful with `as` (the server needs a user). */
  delayedEventAction(csApi: string, delayId: string, action: DelayedEventAction, as?: AsIdentity, form?: DelayedEventForm): Promise<ActionOutcome>;
  /** undefined = not found / unusable (400 Unknown `delay_id`); throws HomeserverError on 5xx/transport. */
  lookupDelayedEvent(csApi: string, delayId: string, as: AsIdentity): Promise<DelayedEventLookup | undefined>;
  /** MSC4502; exactly one of mxid / serverName. Throws HomeserverError (status 404 = unsupported). */
  isJoined(csApi: string, asToken: string, roomId: string, who: { mxid: string } | { serverName: string }): Promise<boolean>;
  /** Throws HomeserverError. */
  joinedMembers(csApi: string, asToken: string, roomId: string): Promise<Set<string>>;
  /** MSC4512 federation proxy. Throws HomeserverError when the proxy itself fails. */
  fedProxy(csApi: string, asToken: string, req: { destination: string; method: string; path: string; body: unknown }): Promise<{ status: number; content: unknown }>;
}

export interface HomeserverClientDeps {
  fetch?: Fetch;
}

const MSC4140 = '/_matrix/client/unstable/org.matrix.msc4140';

function parseRetryAfter(header: string | null, body: unknown): number | undefined {
  if (header) {
    const secs = Number(header);
    if (Number.isFinite(secs) && secs >= 0) return secs * 1000;
    const date = Date.parse(header);
    if (Number.isFinite(date)) return Math.max(0, date - Date.now());
  }
  const ms = (body as Record<string, unknown> | undefined)?.retry_after_ms;
  return typeof ms === 'number' && ms >= 0 ? ms : undefined;
}

export function createHomeserverClient(deps: HomeserverClientDeps = {}): HomeserverClient {
  const doFetch: Fetch = deps.fetch ?? globalThis.fetch;

  return {
    async delayedEventAction(csApi, delayId, action, as, form = 'path') {
      const q = as ? `?user_id=${encodeURIComponent(as.userId)}` : '';
      const base = `${csApi}${MSC4140}/delayed_events/${encodeURIComponent(delayId)}`;
      const url = form === 'path' ? `${base}/${action}${q}` : `${base}${q}`;
      let a: Answer;
      try {
        a = await request(doFetch, url, { method: 'POST', token: as?.asToken, body: form === 'path' ? {} : { action }, timeoutMs: 5_000 });
      } catch (err) {
        return { kind: 'retry', status: undefined, reason: (err as Error).message };
      }
      if (a.status === 200 || a.status === 204) return { kind: 'ok' };
      if ((a.status === 404 || a.status === 405) && (a.json as { errcode?: unknown } | undefined)?.errcode === 'M_UNRECOGNIZED') {
        return { kind: 'unrecognized', status: a.status };
      }
      if (a.status === 404 || (as && action === 'send' && a.status === 409)) return { kind: 'not_found', status: a.status };
      if (a.status === 429) {
        return { kind: 'retry', status: 429, retryAfterMs: parseRetryAfter(a.headers.get('retry-after'), a.json), reason: 'rate limited' };
      }
      return { kind: 'retry', status: a.status, reason: `answered ${a.status}` };
    },

    async lookupDelayedEvent(csApi, delayId, as) {
      const url = `${csApi}${MSC4140}/delayed_events/${encodeURIComponent(delayId)}?user_id=${encodeURIComponent(as.userId)}`;
      const a = await request(doFetch, url, { token: as.asToken, timeoutMs: 5_000 });
      if (a.status >= 500) throw errorOf('delayed event look-up', a);
      const body = a.json as Record<string, unknown> | undefined;
      if (a.status !== 200 || typeof body !== 'object' || body === null) return undefined;
      const delay = typeof body.delay_ms === 'number' ? body.delay_ms : body.delay;
      if (typeof body.room_id !== 'string' || typeof delay !== 'number' || !(delay > 0)) return undefined;
      return { roomId: body.room_id, delayMs: delay };
    },

    async isJoined(csApi, asToken, roomId, who) {
      const q = 'mxid' in who ? `mxid=${encodeURIComponent(who.mxid)}` : `server_name=${encodeURIComponent(who.serverName)}`;
      const url = `${csApi}/_matrix/client/unstable/io.element.msc4502/rooms/${encodeURIComponent(roomId)}/is_joined?${q}`;
      const a = await request(doFetch, url, { token: asToken, timeoutMs: 10_000 });
      if (!isOk(a)) throw errorOf('is_joined', a);
      const joined = (a.json as Record<string, unknown> | undefined)?.joined;
      if (typeof joined !== 'boolean') throw new HomeserverError(a.status, 'M_BAD_JSON', 'is_joined answer has no boolean "joined"');
      return joined;
    },

    async joinedMembers(csApi, asToken, roomId) {
      return new Set(await joinedMembersAt(doFetch, csApi, asToken, roomId));
    },

    async fedProxy(csApi, asToken, req) {
      const url = `${csApi}/_matrix/client/unstable/io.element.msc4512/appservice/fed_proxy`;
      const a = await request(doFetch, url, { method: 'POST', token: asToken, body: req, timeoutMs: 30_000 });
      const body = a.json as Record<string, unknown> | undefined;
      if (!isOk(a) || typeof body?.status !== 'number') throw errorOf('fed_proxy', a);
      return { status: body.status, content: body.content };
    },
  };
}
