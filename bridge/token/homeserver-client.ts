/**
 * What the token service asks of client-server APIs: where a server's client-server API is
 * (`LIVEKIT_CS_API_URL_OVERRIDES`, then `/.well-known/matrix/client` `m.homeserver.base_url`,
 * cached 4 h on the injected clock), the MSC4140 delayed-event actions (`restart`/`send`, no
 * auth in legacy mode; `Bearer as_token` + `?user_id=` in appservice mode; 5 s), the delayed
 * event look-up, MSC4502 `is_joined`, `joined_members` and the MSC4512 `fed_proxy`. HTTP goes
 * through an injected `fetch`; each call is bounded by a real-time timeout.
 */
import type { Clock } from '../../common/clock.ts';
import type { Logger } from '../../common/logger.ts';
import type { FederationClient } from './federation.ts';
import { splitHostPort } from './federation.ts';

export type Fetch = typeof globalThis.fetch;

export class CsApiUnresolvableError extends Error {
  constructor(serverName: string, why: string) {
    super(`cannot resolve the client-server API of ${serverName}: ${why}`);
    this.name = 'CsApiUnresolvableError';
  }
}

export class HomeserverRequestError extends Error {
  readonly status: number | undefined;
  constructor(message: string, status?: number) {
    super(message);
    this.name = 'HomeserverRequestError';
    this.status = status;
  }
}

export interface CsApiResolver {
  /** Base URL without a trailing slash; throws CsApiUnresolvableError. */
  resolve(serverName: string): Promise<string>;
}

export interface CsApiResolverDeps {
  clock: Clock;
  logger: Logger;
  federation: FederationClient;
  overrides: Record<string, string>;
  cacheMs?: number;
}

export function createCsApiResolver(deps: CsApiResolverDeps): CsApiResolver {
  const cacheMs = deps.cacheMs ?? 4 * 3_600_000;
  const cache = new Map<string, { url: string; until: number }>();
  return {
    async resolve(serverName) {
      const override = deps.overrides[serverName];
      if (override) return override.replace(/\/+$/, '');
      const hit = cache.get(serverName);
      if (hit && hit.until > deps.clock.now()) return hit.url;
      const hp = splitHostPort(serverName);
      if (!hp) throw new CsApiUnresolvableError(serverName, 'not a valid server name');
      let base: unknown;
      try {
        const res = await deps.federation.getJson(
          { host: hp.host, port: hp.port ?? 443, sni: /^[\d.]+$|:/.test(hp.host) ? undefined : hp.host, hostHeader: serverName },
          '/.well-known/matrix/client',
        );
        if (res.status < 200 || res.status >= 300) throw new Error(`.well-known/matrix/client answered ${res.status}`);
        base = ((res.json as Record<string, unknown> | undefined)?.['m.homeserver'] as Record<string, unknown> | undefined)?.base_url;
      } catch (err) {
        throw new CsApiUnresolvableError(serverName, (err as Error).message);
      }
      if (typeof base !== 'string' || !/^https?:\/\//.test(base)) {
        throw new CsApiUnresolvableError(serverName, 'no m.homeserver.base_url in .well-known/matrix/client');
      }
      const url = base.replace(/\/+$/, '');
      cache.set(serverName, { url, until: deps.clock.now() + cacheMs });
      return url;
    },
  };
}

export type DelayedEventAction = 'restart' | 'send';

/** Outcome of one delayed-event action attempt. */
export type ActionOutcome =
  | { kind: 'ok' }
  | { kind: 'not_found'; status: number }
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
  delayedEventAction(csApi: string, delayId: string, action: DelayedEventAction, as?: AsIdentity): Promise<ActionOutcome>;
  /** undefined = not found / unusable (400 Unknown `delay_id`); throws HomeserverRequestError on 5xx/transport. */
  lookupDelayedEvent(csApi: string, delayId: string, as: AsIdentity): Promise<DelayedEventLookup | undefined>;
  /** MSC4502; exactly one of mxid / serverName. Throws HomeserverRequestError (status 404 = unsupported). */
  isJoined(csApi: string, asToken: string, roomId: string, who: { mxid: string } | { serverName: string }): Promise<boolean>;
  /** Throws HomeserverRequestError. */
  joinedMembers(csApi: string, asToken: string, roomId: string): Promise<Set<string>>;
  /** MSC4512 federation proxy. Throws HomeserverRequestError when the proxy itself fails. */
  fedProxy(csApi: string, asToken: string, req: { destination: string; method: string; path: string; body: unknown }): Promise<{ status: number; content: unknown }>;
}

export interface HomeserverClientDeps {
  fetch?: Fetch;
  logger: Logger;
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

async function readJson(res: Response): Promise<unknown> {
  try {
    return await res.json();
  } catch {
    return undefined;
  }
}

export function createHomeserverClient(deps: HomeserverClientDeps): HomeserverClient {
  const doFetch: Fetch = deps.fetch ?? globalThis.fetch;

  async function call(url: string, init: RequestInit, timeoutMs: number): Promise<Response> {
    try {
      return await doFetch(url, { ...init, signal: AbortSignal.timeout(timeoutMs) });
    } catch (err) {
      throw new HomeserverRequestError(`${init.method ?? 'GET'} ${url.replace(/\?.*/, '')} failed: ${(err as Error).message}`);
    }
  }

  return {
    async delayedEventAction(csApi, delayId, action, as) {
      const q = as ? `?user_id=${encodeURIComponent(as.userId)}` : '';
      const url = `${csApi}${MSC4140}/delayed_events/${encodeURIComponent(delayId)}/${action}${q}`;
      let res: Response;
      try {
        res = await call(
          url,
          {
            method: 'POST',
            headers: { 'Content-Type': 'application/json', ...(as ? { Authorization: `Bearer ${as.asToken}` } : {}) },
            body: '{}',
          },
          5_000,
        );
      } catch (err) {
        return { kind: 'retry', status: undefined, reason: (err as Error).message };
      }
      const body = await readJson(res);
      if (res.status === 200 || res.status === 204) return { kind: 'ok' };
      if (res.status === 404 || (as && action === 'send' && res.status === 409)) return { kind: 'not_found', status: res.status };
      if (res.status === 429) {
        return { kind: 'retry', status: 429, retryAfterMs: parseRetryAfter(res.headers.get('retry-after'), body), reason: 'rate limited' };
      }
      return { kind: 'retry', status: res.status, reason: `answered ${res.status}` };
    },

    async lookupDelayedEvent(csApi, delayId, as) {
      const url = `${csApi}${MSC4140}/delayed_events/${encodeURIComponent(delayId)}?user_id=${encodeURIComponent(as.userId)}`;
      const res = await call(url, { headers: { Authorization: `Bearer ${as.asToken}` } }, 5_000);
      const body = (await readJson(res)) as Record<string, unknown> | undefined;
      if (res.status >= 500) throw new HomeserverRequestError(`delayed event look-up answered ${res.status}`, res.status);
      if (res.status !== 200 || !body) return undefined;
      const delay = typeof body.delay_ms === 'number' ? body.delay_ms : body.delay;
      if (typeof body.room_id !== 'string' || typeof delay !== 'number' || !(delay > 0)) return undefined;
      return { roomId: body.room_id, delayMs: delay };
    },

    async isJoined(csApi, asToken, roomId, who) {
      const q = 'mxid' in who ? `mxid=${encodeURIComponent(who.mxid)}` : `server_name=${encodeURIComponent(who.serverName)}`;
      const url = `${csApi}/_matrix/client/unstable/io.element.msc4502/rooms/${encodeURIComponent(roomId)}/is_joined?${q}`;
      const res = await call(url, { headers: { Authorization: `Bearer ${asToken}` } }, 10_000);
      const body = (await readJson(res)) as Record<string, unknown> | undefined;
      if (res.status < 200 || res.status >= 300) throw new HomeserverRequestError(`is_joined answered ${res.status}`, res.status);
      if (typeof body?.joined !== 'boolean') throw new HomeserverRequestError('is_joined answer has no boolean "joined"', res.status);
      return body.joined;
    },

    async joinedMembers(csApi, asToken, roomId) {
      const url = `${csApi}/_matrix/client/v3/rooms/${encodeURIComponent(roomId)}/joined_members`;
      const res = await call(url, { headers: { Authorization: `Bearer ${asToken}` } }, 30_000);
      const body = (await readJson(res)) as Record<string, unknown> | undefined;
      if (res.status < 200 || res.status >= 300) throw new HomeserverRequestError(`joined_members answered ${res.status}`, res.status);
      const joined = body?.joined;
      if (!joined || typeof joined !== 'object') throw new HomeserverRequestError('joined_members answer has no "joined"', res.status);
      return new Set(Object.keys(joined));
    },

    async fedProxy(csApi, asToken, req) {
      const url = `${csApi}/_matrix/client/unstable/io.element.msc4512/appservice/fed_proxy`;
      const res = await call(
        url,
        { method: 'POST', headers: { Authorization: `Bearer ${asToken}`, 'Content-Type': 'application/json' }, body: JSON.stringify(req) },
        30_000,
      );
      const body = (await readJson(res)) as Record<string, unknown> | undefined;
      if (res.status < 200 || res.status >= 300 || typeof body?.status !== 'number') {
        throw new HomeserverRequestError(`fed_proxy answered ${res.status}`, res.status);
      }
      return { status: body.status, content: body.content };
    },
  };
}
