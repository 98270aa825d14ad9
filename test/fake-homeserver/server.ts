/**
 * The fake Synapse 1.132 for tests: an HTTP listener on 127.0.0.1 serving the client-server
 * endpoints calls need (rooms, membership, state writes with Synapse's auth, redactions, MSC4140
 * delayed events, typing / receipts / to-device), the reads of cs-read-routes.ts (state with
 * Synapse's joined / left / world_readable rules, members, joined rooms, whoami, OpenID and
 * the federation userinfo), the appservice ping, and one registered appservice it pushes events
 * to (appservice-pusher.ts). The registration is validated like Synapse's loader
 * (registration.ts). Events about unknown local users in the namespace trigger the user query
 * first. Responses carry Synapse's headers and `{errcode, error}` bodies. Tests may also drive
 * `model` directly.
 * Lifecycle: `startFakeHomeserver(opts)` → `{url, model, pusher, delayed, stop()}`; `restart()`
 * simulates a Synapse restart for the pusher (rules 3, 7, 10). compose.ts adds the TLS
 * federation server and the token-service pieces.
 */
import { randomBytes } from 'node:crypto';
import { createServer, type Server } from 'node:http';
import express, { type NextFunction, type Request, type Response } from 'express';
import { createSystemClock, type Clock } from '../../common/clock.ts';
import { closeServer, listen, urlOf } from '../../common/http.ts';
import { createAppservicePusher, type AppserviceRegistration, type AppservicePusher } from './appservice-pusher.ts';
import { mountReadRoutes } from './cs-read-routes.ts';
import { mountEphemeralRoutes } from './ephemeral-routes.ts';
import { handler, sendError, sendJson, tokenOf, type FakeHomeserverContext } from './http-util.ts';
import { createHomeserverModel, MatrixApiError, type StoredEvent } from './model.ts';
import { createMatrixRtcFeatures, type MatrixRtcFeatures, type MatrixRtcProfile } from './matrix-rtc.ts';
import { createDelayedEvents, type DelayedEvents } from './msc4140.ts';
import { createInterest, validateRegistration, validateRegistrations } from './registration.ts';

export { sendJson } from './http-util.ts';
export type { FakeHomeserverContext } from './http-util.ts';

export interface FakeHomeserverOptions {
  serverName?: string;
  /** Port on 127.0.0.1 (a README's `http://127.0.0.1:8008`); default any free one. */
  port?: number;
  registration: AppserviceRegistration;
  /** Registrations of other appservices on the same homeserver (checked for reused id/as_token). */
  otherRegistrations?: AppserviceRegistration[];
  clock?: Clock;
  /** Unit of the appservice retry backoff (Synapse: 1000 ms, i.e. 2 s, 4 s, … 512 s). */
  backoffBaseMs?: number;
  /** `max_event_delay_duration` in ms (fixtures: 24 h, the default here); null disables MSC4140. */
  maxEventDelayMs?: number | null;
  /** `experimental_features.msc2409_to_device_messages_enabled`. */
  msc2409ToDevice?: boolean;
  /** Called for every OpenID token minted. */
  onOpenIdToken?: (token: string, userId: string) => void;
  /** Newer-Synapse MatrixRTC settings (matrix-rtc.ts); default: none, as on 1.132. */
  matrixRtc?: MatrixRtcProfile;
  /** Extra routes mounted before the built-in ones (they win on a path both serve). */
  extraRoutes?: (app: express.Express, hs: FakeHomeserverContext) => void;
}

export interface FakeHomeserver extends FakeHomeserverContext {
  url: string;
  pusher: AppservicePusher;
  delayed: DelayedEvents;
  matrixRtc: MatrixRtcFeatures;
  /** Simulates a Synapse restart: txn ids restart, pending retries wait for the next event. */
  restart(): void;
  stop(): Promise<void>;
}

export async function startFakeHomeserver(opts: FakeHomeserverOptions): Promise<FakeHomeserver> {
  const serverName = opts.serverName ?? 'localhost';
  const clock = opts.clock ?? createSystemClock();
  const reg = validateRegistration(opts.registration);
  validateRegistrations([reg, ...(opts.otherRegistrations ?? []).map((r) => validateRegistration(r))]);
  const interest = createInterest(reg, serverName);
  const model = createHomeserverModel({ serverName, clock });
  const pusher = createAppservicePusher({ registration: reg, clock, backoffBaseMs: opts.backoffBaseMs, interest, msc2409ToDevice: opts.msc2409ToDevice });
  const botId = interest.botId;

  /** `_check_user_exists`: local, unregistered, not the bot, and of interest to the service. */
  const unknownUsers = (ev: StoredEvent) =>
    [...new Set([ev.sender, ...(ev.type === 'm.room.member' && ev.state_key ? [ev.state_key] : [])])].filter(
      (u) => u.endsWith(`:${serverName}`) && !model.users.has(u) && u !== botId && interest.isInterestedInUser(u),
    );
  model.onEvent((ev) => {
    const facts = () => ({ localJoined: model.localJoinedMembers(ev.room_id), aliases: model.room(ev.room_id).aliases });
    if (pusher.interested(ev, facts)) pusher.enqueue(ev, unknownUsers(ev));
  });
  const maxEventDelayMs = opts.maxEventDelayMs === null ? undefined : (opts.maxEventDelayMs ?? 86_400_000);
  const delayed = createDelayedEvents({ model, clock, maxDelayMs: maxEventDelayMs });
  const matrixRtc = createMatrixRtcFeatures(opts.matrixRtc);

  const isAppservice = (req: Request) => tokenOf(req) === reg.as_token;

  /** synapse/api/auth/base.py: as_token + `?user_id=` only for registered users of interest. */
  function requester(req: Request): string {
    const token = tokenOf(req);
    if (!token) throw new MatrixApiError(401, 'M_MISSING_TOKEN', 'Missing access token.');
    if (token === reg.as_token) {
      const asUser = typeof req.query.user_id === 'string' ? req.query.user_id : undefined;
      if (!asUser || asUser === botId) return botId;
      if (!interest.isInterestedInUser(asUser)) throw new MatrixApiError(403, 'M_FORBIDDEN', `Application service cannot masquerade as this user (${asUser}).`);
      if (!model.users.has(asUser)) throw new MatrixApiError(403, 'M_FORBIDDEN', `Application service has not registered this user (${asUser})`);
      return asUser;
    }
    const u = model.userForToken(token);
    if (!u) throw new MatrixApiError(401, 'M_UNKNOWN_TOKEN', 'Invalid access token passed.', { soft_logout: false });
    return u.userId;
  }

  const ctx: FakeHomeserverContext = {
    model,
    registration: reg,
    serverName,
    clock,
    interest,
    openidTokens: new Map(),
    onOpenIdToken: opts.onOpenIdToken,
    maxEventDelayMs,
    extraUnstableFeatures: matrixRtc.unstableFeatures(),
    requester,
    isAppservice,
  };
  const app = express();
  app.disable('x-powered-by');
  app.use(express.json({ type: () => true }));
  const C = '/_matrix/client';
  opts.extraRoutes?.(app, ctx);
  mountReadRoutes(app, ctx);
  mountEphemeralRoutes(app, ctx, pusher);
  delayed.mount(app, ctx);
  matrixRtc.mount(app, ctx);

  app.post(`${C}/v3/createRoom`, handler((req, res) => {
    const user = ctx.requester(req);
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
      const user = ctx.requester(req);
      const b = (req.body ?? {}) as { user_id?: string; reason?: string };
      if (!b.user_id) throw new MatrixApiError(400, 'M_MISSING_PARAM', 'Missing user_id');
      const membership = action === 'invite' ? 'invite' : action === 'ban' ? 'ban' : 'leave';
      model.setMembership(user, String(req.params.roomId), b.user_id, membership, b.reason);
      sendJson(res, 200, {});
    }));
  }
  app.post(`${C}/v3/rooms/:roomId/join`, handler((req, res) => {
    const user = ctx.requester(req);
    model.setMembership(user, String(req.params.roomId), user, 'join');
    sendJson(res, 200, { room_id: req.params.roomId });
  }));
  app.post(`${C}/v3/join/:roomId`, handler((req, res) => {
    const user = ctx.requester(req);
    model.setMembership(user, String(req.params.roomId), user, 'join');
    sendJson(res, 200, { room_id: req.params.roomId });
  }));
  app.post(`${C}/v3/rooms/:roomId/leave`, handler((req, res) => {
    const user = ctx.requester(req);
    model.setMembership(user, String(req.params.roomId), user, 'leave');
    sendJson(res, 200, {});
  }));
  const putState = handler((req, res) => {
    const user = ctx.requester(req);
    const params = req.params as Record<string, string>;
    const content = req.body;
    if (typeof content !== 'object' || content === null || Array.isArray(content)) throw new MatrixApiError(400, 'M_NOT_JSON', 'Content not JSON.');
    const delay = delayed.parseDelay(req);
    if (delay !== undefined) {
      return sendJson(res, 200, { delay_id: delayed.schedule(user, params.roomId!, params.type!, params.stateKey ?? '', content as Record<string, unknown>, delay) });
    }
    const eventId = model.sendState(user, params.roomId!, params.type!, params.stateKey ?? '', content as Record<string, unknown>);
    sendJson(res, 200, { event_id: eventId });
  });
  app.put(`${C}/v3/rooms/:roomId/state/:type`, putState);
  app.put(`${C}/v3/rooms/:roomId/state/:type/:stateKey`, putState);
  app.put(`${C}/v3/rooms/:roomId/send/:type/:txnId`, handler((req, res) => {
    const user = ctx.requester(req);
    const content = (req.body ?? {}) as Record<string, unknown>;
    const sticky = matrixRtc.parseStickyDuration(req);
    const delay = delayed.parseDelay(req);
    if (delay !== undefined) return sendJson(res, 200, { delay_id: delayed.schedule(user, String(req.params.roomId), String(req.params.type), undefined, content, delay, sticky) });
    const eventId = model.sendEvent(user, String(req.params.roomId), String(req.params.type), content, sticky === undefined ? {} : { sticky: { duration_ms: sticky } });
    sendJson(res, 200, { event_id: eventId });
  }));
  app.put(`${C}/v3/rooms/:roomId/redact/:eventId/:txnId`, handler((req, res) => {
    const user = ctx.requester(req);
    const b = (req.body ?? {}) as { reason?: string };
    const eventId = model.redact(user, String(req.params.roomId), String(req.params.eventId), b.reason);
    sendJson(res, 200, { event_id: eventId });
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
  app.use((_req: Request, res: Response) => sendJson(res, 404, { errcode: 'M_UNRECOGNIZED', error: 'Unrecognized request' }));
  app.use((err: unknown, _req: Request, res: Response, _next: NextFunction) => {
    if ((err as { type?: string }).type === 'entity.parse.failed') return sendJson(res, 400, { errcode: 'M_NOT_JSON', error: 'Content not JSON.' });
    sendError(res, err);
  });

  const server: Server = createServer(app);
  const address = await listen(server, '127.0.0.1', opts.port ?? 0);
  return {
    ...ctx,
    url: urlOf(address),
    pusher,
    delayed,
    matrixRtc,
    restart: () => pusher.restart(),
    async stop() {
      pusher.stop();
      delayed.stop();
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
