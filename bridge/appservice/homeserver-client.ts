/**
 * The client-server API calls the appservice makes to its homeserver, authenticated with the
 * `as_token` and optionally masquerading (`?user_id=`) as a local user in its namespace:
 * appservice ping, `/joined_rooms`, `/joined_members`, `/state`. Failures are typed
 * (`HomeserverError` with status and errcode) so reconcile can tell "no" from "unknown".
 */

export class HomeserverError extends Error {
  readonly status: number;
  readonly errcode: string;
  constructor(status: number, errcode: string, message: string) {
    super(message);
    this.name = 'HomeserverError';
    this.status = status;
    this.errcode = errcode;
  }
}

export interface HomeserverClient {
  ping(appserviceId: string, transactionId?: string): Promise<{ durationMs: number }>;
  joinedRooms(asUser?: string): Promise<string[]>;
  joinedMembers(roomId: string, asUser?: string): Promise<string[]>;
  roomState(roomId: string, asUser?: string): Promise<unknown[]>;
}

export interface HomeserverClientDeps {
  baseUrl: string;
  asToken: string;
  fetch?: typeof fetch;
  timeoutMs?: number;
}

export function createHomeserverClient(deps: HomeserverClientDeps): HomeserverClient {
  const base = deps.baseUrl.replace(/\/+$/, '');
  const doFetch = deps.fetch ?? fetch;
  const timeoutMs = deps.timeoutMs ?? 30_000;

  async function call(method: string, path: string, asUser: string | undefined, body?: unknown): Promise<unknown> {
    const url = new URL(base + path);
    if (asUser) url.searchParams.set('user_id', asUser);
    let res: Response;
    try {
      res = await doFetch(url, {
        method,
        headers: {
          Authorization: `Bearer ${deps.asToken}`,
          ...(body !== undefined ? { 'Content-Type': 'application/json' } : {}),
        },
        body: body !== undefined ? JSON.stringify(body) : undefined,
        signal: AbortSignal.timeout(timeoutMs),
      });
    } catch (err) {
      throw new HomeserverError(0, 'M_CONNECTION_FAILED', `${method} ${path}: ${(err as Error).message}`);
    }
    const text = await res.text();
    let json: unknown;
    try {
      json = text ? JSON.parse(text) : undefined;
    } catch {
      json = undefined;
    }
    if (!res.ok) {
      const e = json as { errcode?: string; error?: string } | undefined;
      throw new HomeserverError(res.status, e?.errcode ?? 'M_UNKNOWN', `${method} ${path}: ${res.status} ${e?.error ?? text.slice(0, 200)}`);
    }
    if (json === undefined) throw new HomeserverError(res.status, 'M_NOT_JSON', `${method} ${path}: response is not JSON`);
    return json;
  }

  const enc = encodeURIComponent;
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
    async joinedMembers(roomId, asUser) {
      const r = (await call('GET', `/_matrix/client/v3/rooms/${enc(roomId)}/joined_members`, asUser)) as { joined?: unknown };
      if (typeof r.joined !== 'object' || r.joined === null) throw new HomeserverError(200, 'M_BAD_JSON', 'joined_members: no joined map');
      return Object.keys(r.joined);
    },
    async roomState(roomId, asUser) {
      const r = await call('GET', `/_matrix/client/v3/rooms/${enc(roomId)}/state`, asUser);
      if (!Array.isArray(r)) throw new HomeserverError(200, 'M_BAD_JSON', 'state: not an array');
      return r;
    },
  };
}
