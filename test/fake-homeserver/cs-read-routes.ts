/**
 * The fake homeserver's client-server reads, as Synapse 1.132 answers an appservice
 * (fixtures/synapse-1.132/cs-api; README rules 27-32):
 * - `/versions` with 1.132's versions and unstable features;
 * - `whoami` (no `device_id` for the as_token);
 * - `/state`, `/state/{type}/{key}` (`?format=event` quirk), `/members`: joined → current state,
 *   left → the state at the leave, `world_readable` → current state, otherwise 403 "not in room,
 *   and room previews are disabled"; a ban is not a leave (synapse/handlers/message.py
 *   `get_state_events`, synapse/api/auth/base.py `check_user_in_room_or_world_readable`);
 * - `joined_members`: the appservice path skips the membership check when any joined member
 *   is of interest; a user must be joined (or the room world_readable);
 * - `joined_rooms`;
 * - OpenID `request_token` (own user only, 3600 s) and the federation `openid/userinfo`
 *   (synapse/rest/client/openid.py, synapse/federation/transport/server/__init__.py).
 */
import { randomBytes } from 'node:crypto';
import type express from 'express';
import type { Request } from 'express';
import { formatEvent, formatStateEventQuirk } from './event-format.ts';
import { MatrixApiError, type StoredEvent } from './model.ts';
import { handler, sendJson, type FakeHomeserverContext } from './http-util.ts';

/** `GET /_matrix/client/versions` of Synapse 1.132.0 (cs-api/versions.json). */
export const SYNAPSE_1132_VERSIONS = ['r0.0.1', 'r0.1.0', 'r0.2.0', 'r0.3.0', 'r0.4.0', 'r0.5.0', 'r0.6.0', 'r0.6.1', 'v1.1', 'v1.2', 'v1.3', 'v1.4', 'v1.5', 'v1.6', 'v1.7', 'v1.8', 'v1.9', 'v1.10', 'v1.11'];
const UNSTABLE_TRUE = ['org.matrix.label_based_filtering', 'org.matrix.e2e_cross_signing', 'org.matrix.msc2432', 'uk.half-shot.msc2666.query_mutual_rooms', 'org.matrix.msc2285.stable', 'org.matrix.msc3827.stable', 'org.matrix.msc3440.stable', 'org.matrix.msc3771', 'fi.mau.msc2659.stable', 'org.matrix.msc3981', 'org.matrix.simplified_msc3575'];
const UNSTABLE_FALSE = ['io.element.e2ee_forced.public', 'io.element.e2ee_forced.private', 'io.element.e2ee_forced.trusted_private', 'org.matrix.msc3026.busy_presence', 'org.matrix.msc3773', 'fi.mau.msc2815', 'org.matrix.msc3882', 'org.matrix.msc3881', 'org.matrix.msc3874', 'org.matrix.msc3912', 'org.matrix.msc3391', 'org.matrix.msc4069', 'org.matrix.msc4028', 'org.matrix.msc4108', 'uk.tcpip.msc4133', 'org.matrix.msc4155'];

export const OPENID_TOKEN_LIFETIME_MS = 3_600_000;

export function mountReadRoutes(app: express.Express, ctx: FakeHomeserverContext): void {
  const { model, clock, interest } = ctx;
  const C = '/_matrix/client';

  const notInRoom = (userId: string, roomId: string) => new MatrixApiError(403, 'M_FORBIDDEN', `User ${userId} not in room ${roomId}, and room previews are disabled`);
  const worldReadable = (roomId: string) => model.stateEvent(roomId, 'm.room.history_visibility', '')?.content.history_visibility === 'world_readable';

  /** The state `userId` may read (check_user_in_room_or_world_readable, allow_departed_users). */
  function readableState(roomId: string, userId: string): StoredEvent[] {
    model.room(roomId);
    const member = model.stateEvent(roomId, 'm.room.member', userId);
    const membership = member?.content.membership;
    if (membership === 'join') return model.currentState(roomId);
    if (membership === 'leave' && member) return model.stateAfter(roomId, member.event_id) ?? [];
    if (worldReadable(roomId)) return model.currentState(roomId);
    throw notInRoom(userId, roomId);
  }

  app.get(`${C}/versions`, (_req, res) => {
    const unstable: Record<string, boolean> = {};
    for (const k of UNSTABLE_TRUE) unstable[k] = true;
    for (const k of UNSTABLE_FALSE) unstable[k] = false;
    unstable['org.matrix.msc4140'] = ctx.maxEventDelayMs !== undefined;
    Object.assign(unstable, ctx.extraUnstableFeatures);
    sendJson(res, 200, { versions: SYNAPSE_1132_VERSIONS, unstable_features: unstable });
  });

  app.get(`${C}/v3/account/whoami`, handler((req, res) => {
    const user = ctx.requester(req);
    const body: Record<string, unknown> = { user_id: user, is_guest: false };
    if (!ctx.isAppservice(req)) body.device_id = 'FAKEDEVICE';
    sendJson(res, 200, body);
  }));

  app.get(`${C}/v3/rooms/:roomId/state`, handler((req, res) => {
    const user = ctx.requester(req);
    const now = clock.now();
    sendJson(res, 200, readableState(String(req.params.roomId), user).map((e) => formatEvent(e, now)));
  }));

  const getStateEvent = handler((req, res) => {
    const user = ctx.requester(req);
    const p = req.params as Record<string, string>;
    const key = p.stateKey ?? '';
    const ev = readableState(p.roomId!, user).find((e) => e.type === p.type && e.state_key === key);
    if (!ev) throw new MatrixApiError(404, 'M_NOT_FOUND', 'Event not found.');
    sendJson(res, 200, req.query.format === 'event' ? formatStateEventQuirk(ev) : ev.content);
  });
  app.get(`${C}/v3/rooms/:roomId/state/:type`, getStateEvent);
  app.get(`${C}/v3/rooms/:roomId/state/:type/:stateKey`, getStateEvent);

  app.get(`${C}/v3/rooms/:roomId/members`, handler((req, res) => {
    const user = ctx.requester(req);
    const now = clock.now();
    const only = typeof req.query.membership === 'string' ? req.query.membership : undefined;
    const not = typeof req.query.not_membership === 'string' ? req.query.not_membership : undefined;
    const chunk = readableState(String(req.params.roomId), user)
      .filter((e) => e.type === 'm.room.member')
      .filter((e) => (only === undefined || e.content.membership === only) && (not === undefined || e.content.membership !== not));
    sendJson(res, 200, { chunk: chunk.map((e) => formatEvent(e, now)) });
  }));

  app.get(`${C}/v3/rooms/:roomId/joined_members`, handler((req, res) => {
    const user = ctx.requester(req);
    const roomId = String(req.params.roomId);
    model.room(roomId);
    const joined = model.joinedMembers(roomId);
    if (ctx.isAppservice(req)) {
      // The appservice path skips the membership check when any joined member is of interest.
      if (!joined.some((u) => interest.isInterestedInUser(u))) throw new MatrixApiError(403, 'M_FORBIDDEN', 'Appservice not in room');
    } else if (!joined.includes(user) && !worldReadable(roomId)) {
      if (model.membershipOf(roomId, user) === 'leave') {
        throw new MatrixApiError(403, 'M_FORBIDDEN', 'Getting joined members while not being a current member of the room is forbidden.');
      }
      throw notInRoom(user, roomId);
    }
    const out: Record<string, unknown> = {};
    for (const u of joined) {
      const dn = model.stateEvent(roomId, 'm.room.member', u)?.content.displayname;
      out[u] = { avatar_url: null, display_name: typeof dn === 'string' ? dn : null };
    }
    sendJson(res, 200, { joined: out });
  }));

  app.get(`${C}/v3/joined_rooms`, handler((req, res) => {
    sendJson(res, 200, { joined_rooms: model.joinedRooms(ctx.requester(req)) });
  }));

  app.post(`${C}/v3/user/:userId/openid/request_token`, handler((req, res) => {
    const user = ctx.requester(req);
    if (req.params.userId !== user) throw new MatrixApiError(403, 'M_FORBIDDEN', 'Cannot request tokens for other users.');
    const token = randomBytes(18).toString('base64url');
    ctx.openidTokens.set(token, { userId: user, expiresAt: clock.now() + OPENID_TOKEN_LIFETIME_MS });
    ctx.onOpenIdToken?.(token, user);
    sendJson(res, 200, { access_token: token, token_type: 'Bearer', matrix_server_name: ctx.serverName, expires_in: OPENID_TOKEN_LIFETIME_MS / 1000 });
  }));

  // Served by the `federation` / `openid` listener resources; the fixtures had them on the client port.
  app.get('/_matrix/federation/v1/openid/userinfo', (req: Request, res) => {
    const token = typeof req.query.access_token === 'string' ? req.query.access_token : undefined;
    if (!token) return sendJson(res, 401, { errcode: 'M_MISSING_TOKEN', error: 'Access Token required' });
    const entry = ctx.openidTokens.get(token);
    if (!entry || entry.expiresAt <= clock.now()) return sendJson(res, 401, { errcode: 'M_UNKNOWN_TOKEN', error: 'Access Token unknown or expired' });
    sendJson(res, 200, { sub: entry.userId });
  });
}
