/**
 * The fake Synapse 1.132 for tests: an HTTP listener on 127.0.0.1 serving the client-server
 * endpoints calls need (rooms, membership, state writes with Synapse's auth, redactions, state
 * reads, joined members/rooms with appservice masquerading, the appservice ping, OpenID), and one
 * registered appservice it pushes events to (appservice-pusher.ts). Responses carry Synapse's
 * headers (chunked JSON, cache-control, Server, CORS; README rule 33) and `{errcode, error}`
 * bodies. Tests may also drive `model` directly. Known simplification: a user who left a room
 * reads its current state, not the state at their leave.
 * Lifecycle: `startFakeHomeserver(opts)` → `{url, model, pusher, stop()}`; `restart()` simulates a
 * Synapse restart for the pusher (rules 3, 7, 10).
 */
import { randomBytes } from 'node:crypto';
import { createServer, type Server } from 'node:http';
import express, { type NextFunction, type Request, type Response } from 'express';
import { createSystemClock, type Clock } from '../../common/clock.ts';
import { closeServer, listen, urlOf } from '../../common/http.ts';
import { createAppservicePusher, type AppserviceRegistration, type AppservicePusher } from './appservice-pusher.ts';
import { formatEvent, formatStateEventQuirk } from './event-format.ts';
import { createHomeserverModel, MatrixApiError, type HomeserverModel } from './model.ts';

export interface FakeHomeserverOptions {
  serverName?: string;
  registration: AppserviceRegistration;
  clock?: Clock;
  /** Unit of the appservice retry backoff (Synapse: 1000 ms, i.e. 2 s, 4 s, … 512 s). */
  backoffBaseMs?: number;
  /** Extra routes (delayed events, federation) mounted before the 404 handler. */
  extraRoutes?: (app: express.Express, hs: FakeHomeserverContext) => void;
}

export interface FakeHomeserverContext {
  model: HomeserverModel;
  registration: AppserviceRegistration;
  /** OpenID access token -> user id. */
  openidTokens: Map<string, string>;
  /** Resolves the requesting user of a client-server request (throws MatrixApiError). */
  requester(req: Request): string;
}

export interface FakeHomeserver extends FakeHomeserverContext {
  url: string;
  pusher: AppservicePusher;
  /** Simulates a Synapse restart: txn ids restart, pending retries wait for the next event. */
  restart(): void;
  stop(): Promise<void>;
}

const SYNAPSE_HEADERS: Record<string, string> = {
  'Content-Type': 'application/json',
  'Cache-Control': 'no-cache, no-store, must-revalidate',
  Server: 'Synapse/1.132.0',
  'Access-Control-Allow-Origin': '*',
  'Access-Control-Allow-Methods': 'GET, HEAD, POST, PUT, DELETE, OPTIONS',
  'Access-Control-Allow-Headers': 'X-Requested-With, Content-Type, Authorization, Date',
  'Access-Control-Expose-Headers': 'Synapse-Trace-Id, Server',
};

/** Synapse answers with chunked transfer encoding and no Content-Length. */
export function sendJson(res: Response, status: number, body: unknown): void {
  res.status(status);
  for (const [k, v] of Object.entries(SYNAPSE_HEADERS)) res.setHeader(k, v);
  res.write(JSON.stringify(body));
  res.end();
}

function sendError(res: Response, err: unknown): void {
  if (err instanceof MatrixApiError) sendJson(res, err.status, { errcode: err.errcode, error: err.message, ...err.extra });
  else sendJson(res, 500, { errcode: 'M_UNKNOWN', error: (err as Error).message });
}

function handler(fn: (req: Request, res: Response) => unknown | Promise<unknown>) {
  return (req: Request, res: Response): void => {
    Promise.resolve()
      .then(() => fn(req, res))
      .catch((err: unknown) => sendError(res, err));
  };
}

function tokenOf(req: Request): string | undefined {
  const h = req.headers.authorization;
  if (typeof h === 'string' && h.startsWith('Bearer ')) return h.slice(7);
  return typeof req.query.access_token === 'string' ? req.query.access_token : undefined;
}

export async function startFakeHomeserver(opts: FakeHomeserverOptions): Promise<FakeHomeserver> {
  const serverName = opts.serverName ?? 'localhost';
  const clock = opts.clock ?? createSystemClock();
  const reg = opts.registration;
  const model = createHomeserverModel({ serverName, clock });
  const pusher = createAppservicePusher({ registration: reg, clock, backoffBaseMs: opts.backoffBaseMs });
  model.onEvent((ev) => {
    if (pusher.interested(ev, () => model.joinedMembers(ev.room_id))) pusher.enqueue(ev);
  });
  const openidTokens = new Map<string, string>();
  const botId = `@${reg.sender_localpart}:${serverName}`;
  const inNamespace = (u: string) => u === botId || reg.namespaces.users.some((n) => new RegExp(`^(?:${n.regex})`).test(u));

  /** Whether the request is the appservice itself (as_token). */
  const isAppservice = (req: Request) => tokenOf(req) === reg.as_token;

  function requester(req: Request): string {
    const token = tokenOf(req);
    if (!token) throw new MatrixApiError(401, 'M_MISSING_TOKEN', 'Missing access token.');
    if (token === reg.as_token) {
      const asUser = typeof req.query.user_id === 'string' ? req.query.user_id : undefined;
      if (!asUser || asUser === botId) return botId;
      if (!inNamespace(asUser)) throw new MatrixApiError(403, 'M_FORBIDDEN', 'Application service cannot masquerade as this user.');
      if (!model.users.has(asUser)) throw new MatrixApiError(403, 'M_FORBIDDEN', 'Application service has not registered this user');
      return asUser;
    }
    const u = model.userForToken(token);
    if (!u) throw new MatrixApiError(401, 'M_UNKNOWN_TOKEN', 'Invalid access token passed.', { soft_logout: false });
    return u.userId;
  }

  function mayReadState(roomId: string, userId: string): void {
    model.room(roomId);
    const m = model.membershipOf(roomId, userId);
    if (m === 'join' || m === 'leave' || m === 'ban') return;
    throw new MatrixApiError(403, 'M_FORBIDDEN', `User ${userId} not in room ${roomId}, and room previews are disabled`);
  }

  const ctx: FakeHomeserverContext = { model, registration: reg, openidTokens, requester };
  const app = express();
  app.disable('x-powered-by');
  app.use(express.json({ type: () => true }));
  const C = '/_matrix/client';

  app.get(`${C}/versions`, (_req, res) =>
    sendJson(res, 200, { versions: ['r0.6.1', 'v1.1', 'v1.2', 'v1.3', 'v1.4', 'v1.5', 'v1.6', 'v1.7', 'v1.8', 'v1.9', 'v1.10', 'v1.11', 'v1.12'], unstable_features: { 'org.matrix.msc4140': true } }),
  );
  app.get(`${C}/v3/account/whoami`, handler((req, res) => {
    const user = requester(req);
    const body: Record<string, unknown> = { user_id: user, is_guest: false };
    if (!isAppservice(req)) body.device_id = 'FAKEDEVICE';
    sendJson(res, 200, body);
  }));
  app.post(`${C}/v3/createRoom`, handler((req, res) => {
    const user = requester(req);
    const b = (req.body ?? {}) as Record<string, unknown>;
    const roomId = model.createRoom(user, {
      version: typeof b.room_version === 'string' ? b.room_version : undefined,
      invite: Array.isArray(b.invite) ? (b.invite as string[]) : undefined,
      name: typeof b.name === 'string' ? b.name : undefined,
      preset: b.preset as 'private_chat' | undefined,
      power_level_content_override: b.power_level_content_override as Record<string, unknown> | undefined,
    });
    sendJson(res, 200, { room_id: roomId });
  }));
  for (const action of ['invite', 'kick', 'ban', 'unban'] as const) {
    app.post(`${C}/v3/rooms/:roomId/${action}`, handler((req, res) => {
      const user = requester(req);
      const b = (req.body ?? {}) as { user_id?: string; reason?: string };
      if (!b.user_id) throw new MatrixApiError(400, 'M_MISSING_PARAM', 'Missing user_id');
      const membership = action === 'invite' ? 'invite' : action === 'ban' ? 'ban' : 'leave';
      model.setMembership(user, String(req.params.roomId), b.user_id, membership, b.reason);
      sendJson(res, 200, {});
    }));
  }
  app.post(`${C}/v3/rooms/:roomId/join`, handler((req, res) => {
    const user = requester(req);
    model.setMembership(user, String(req.params.roomId), user, 'join');
    sendJson(res, 200, { room_id: req.params.roomId });
  }));
  app.post(`${C}/v3/join/:roomId`, handler((req, res) => {
    const user = requester(req);
    model.setMembership(user, String(req.params.roomId), user, 'join');
    sendJson(res, 200, { room_id: req.params.roomId });
  }));
  app.post(`${C}/v3/rooms/:roomId/leave`, handler((req, res) => {
    const user = requester(req);
    model.setMembership(user, String(req.params.roomId), user, 'leave');
    sendJson(res, 200, {});
  }));
  const putState = handler((req, res) => {
    const user = requester(req);
    const params = req.params as Record<string, string>;
    const content = req.body;
    if (typeof content !== 'object' || content === null || Array.isArray(content)) throw new MatrixApiError(400, 'M_NOT_JSON', 'Content not JSON.');
    const eventId = model.sendState(user, params.roomId!, params.type!, params.stateKey ?? '', content as Record<string, unknown>);
    sendJson(res, 200, { event_id: eventId });
  });
  app.put(`${C}/v3/rooms/:roomId/state/:type`, putState);
  app.put(`${C}/v3/rooms/:roomId/state/:type/:stateKey`, putState);
  app.put(`${C}/v3/rooms/:roomId/send/:type/:txnId`, handler((req, res) => {
    const user = requester(req);
    const eventId = model.sendEvent(user, String(req.params.roomId), String(req.params.type), (req.body ?? {}) as Record<string, unknown>);
    sendJson(res, 200, { event_id: eventId });
  }));
  app.put(`${C}/v3/rooms/:roomId/redact/:eventId/:txnId`, handler((req, res) => {
    const user = requester(req);
    const b = (req.body ?? {}) as { reason?: string };
    const eventId = model.redact(user, String(req.params.roomId), String(req.params.eventId), b.reason);
    sendJson(res, 200, { event_id: eventId });
  }));
  app.get(`${C}/v3/rooms/:roomId/state`, handler((req, res) => {
    const user = requester(req);
    const roomId = String(req.params.roomId);
    mayReadState(roomId, user);
    const now = clock.now();
    sendJson(res, 200, model.currentState(roomId).map((e) => formatEvent(e, now)));
  }));
  const getStateEvent = handler((req, res) => {
    const user = requester(req);
    const params = req.params as Record<string, string>;
    mayReadState(params.roomId!, user);
    const ev = model.stateEvent(params.roomId!, params.type!, params.stateKey ?? '');
    if (!ev) throw new MatrixApiError(404, 'M_NOT_FOUND', 'Event not found.');
    sendJson(res, 200, req.query.format === 'event' ? formatStateEventQuirk(ev) : ev.content);
  });
  app.get(`${C}/v3/rooms/:roomId/state/:type`, getStateEvent);
  app.get(`${C}/v3/rooms/:roomId/state/:type/:stateKey`, getStateEvent);
  app.get(`${C}/v3/rooms/:roomId/joined_members`, handler((req, res) => {
    const user = requester(req);
    const roomId = String(req.params.roomId);
    model.room(roomId);
    const joined = model.joinedMembers(roomId);
    if (isAppservice(req)) {
      // The appservice path skips the membership check when any joined member is in its namespace.
      if (!joined.some(inNamespace)) throw new MatrixApiError(403, 'M_NOT_JOINED', 'Appservice not in room');
    } else if (!joined.includes(user)) {
      throw new MatrixApiError(403, 'M_FORBIDDEN', `User ${user} not in room ${roomId}, and room previews are disabled`);
    }
    const out: Record<string, unknown> = {};
    for (const u of joined) {
      const dn = model.stateEvent(roomId, 'm.room.member', u)?.content.displayname;
      out[u] = { avatar_url: null, display_name: typeof dn === 'string' ? dn : null };
    }
    sendJson(res, 200, { joined: out });
  }));
  app.get(`${C}/v3/rooms/:roomId/members`, handler((req, res) => {
    const user = requester(req);
    const roomId = String(req.params.roomId);
    mayReadState(roomId, user);
    const now = clock.now();
    sendJson(res, 200, { chunk: model.currentState(roomId).filter((e) => e.type === 'm.room.member').map((e) => formatEvent(e, now)) });
  }));
  app.get(`${C}/v3/joined_rooms`, handler((req, res) => {
    const user = requester(req);
    sendJson(res, 200, { joined_rooms: model.joinedRooms(user) });
  }));
  app.post(`${C}/v1/appservice/:id/ping`, handler(async (req, res) => {
    if (!isAppservice(req)) {
      requester(req);
      throw new MatrixApiError(403, 'M_FORBIDDEN', 'Only application services can use the /appservice/ping endpoint');
    }
    if (req.params.id !== reg.id) throw new MatrixApiError(403, 'M_FORBIDDEN', 'Mismatching application service ID in path');
    const b = (req.body ?? {}) as { transaction_id?: unknown };
    const r = await pusher.ping(b.transaction_id);
    sendJson(res, r.status, r.body);
  }));
  app.post(`${C}/v3/user/:userId/openid/request_token`, handler((req, res) => {
    const user = requester(req);
    if (req.params.userId !== user) throw new MatrixApiError(403, 'M_FORBIDDEN', 'Cannot request tokens for other users.');
    const token = randomBytes(18).toString('base64url');
    openidTokens.set(token, user);
    sendJson(res, 200, { access_token: token, token_type: 'Bearer', matrix_server_name: serverName, expires_in: 3600 });
  }));
  opts.extraRoutes?.(app, ctx);
  app.use((_req: Request, res: Response) => sendJson(res, 404, { errcode: 'M_UNRECOGNIZED', error: 'Unrecognized request' }));
  app.use((err: unknown, _req: Request, res: Response, _next: NextFunction) => {
    if ((err as { type?: string }).type === 'entity.parse.failed') return sendJson(res, 400, { errcode: 'M_NOT_JSON', error: 'Content not JSON.' });
    sendError(res, err);
  });

  const server: Server = createServer(app);
  const address = await listen(server, '127.0.0.1', 0);
  return {
    ...ctx,
    url: urlOf(address),
    pusher,
    restart: () => pusher.restart(),
    async stop() {
      pusher.stop();
      await closeServer(server);
    },
  };
}

/** A registration like the one Synapse loaded for the fixtures, with fresh tokens. */
export function testRegistration(url: string | null, serverName = 'localhost'): AppserviceRegistration {
  return {
    id: 'rtc-test',
    url,
    as_token: `as_${randomBytes(16).toString('hex')}`,
    hs_token: `hs_${randomBytes(16).toString('hex')}`,
    sender_localpart: 'rtcbot',
    rate_limited: false,
    namespaces: { users: [{ exclusive: false, regex: `@.*:${serverName.replace(/\./g, '\\.')}` }], aliases: [], rooms: [] },
  };
}
