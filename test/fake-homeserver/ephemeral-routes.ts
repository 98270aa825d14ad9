/**
 * The fake homeserver's ephemeral sources, feeding the appservice pusher like Synapse's
 * `notify_interested_services_ephemeral` (synapse/handlers/appservice.py): typing
 * (`m.typing` with the room's current typers) and read receipts (`m.receipt`) for rooms the
 * appservice is interested in, and to-device messages (`PUT /sendToDevice`) for recipients of
 * interest, flattened with `to_user_id` / `to_device_id` (MSC4203). Whether they reach a
 * transaction is the pusher's decision (registration flags, homeserver flag, DOWN state).
 */
import type express from 'express';
import type { AppservicePusher } from './appservice-pusher.ts';
import { handler, sendJson, type FakeHomeserverContext } from './http-util.ts';
import { MatrixApiError } from './model.ts';

export function mountEphemeralRoutes(app: express.Express, ctx: FakeHomeserverContext, pusher: AppservicePusher): void {
  const { model, interest } = ctx;
  const C = '/_matrix/client/v3';
  const typing = new Map<string, Set<string>>();
  const roomOfInterest = (roomId: string) => interest.isInterestedInRoom(roomId, { localJoined: model.localJoinedMembers(roomId), aliases: model.room(roomId).aliases });

  app.put(`${C}/rooms/:roomId/typing/:userId`, handler((req, res) => {
    const user = ctx.requester(req);
    const roomId = String(req.params.roomId);
    if (req.params.userId !== user) throw new MatrixApiError(403, 'M_FORBIDDEN', 'Cannot set another user\'s typing state');
    if (model.membershipOf(roomId, user) !== 'join') throw new MatrixApiError(403, 'M_FORBIDDEN', `User ${user} not in room ${roomId}`);
    const set = typing.get(roomId) ?? new Set<string>();
    typing.set(roomId, set);
    if ((req.body as { typing?: unknown } | undefined)?.typing === true) set.add(user);
    else set.delete(user);
    if (roomOfInterest(roomId)) pusher.enqueueEphemeral([{ type: 'm.typing', room_id: roomId, content: { user_ids: [...set] } }]);
    sendJson(res, 200, {});
  }));

  app.post(`${C}/rooms/:roomId/receipt/:receiptType/:eventId`, handler((req, res) => {
    const user = ctx.requester(req);
    const roomId = String(req.params.roomId);
    if (model.membershipOf(roomId, user) !== 'join') throw new MatrixApiError(403, 'M_FORBIDDEN', `User ${user} not in room ${roomId}`);
    const receiptType = String(req.params.receiptType);
    const eventId = String(req.params.eventId);
    if (roomOfInterest(roomId)) {
      pusher.enqueueEphemeral([{ type: 'm.receipt', room_id: roomId, content: { [eventId]: { [receiptType]: { [user]: { ts: ctx.clock.now() } } } } }]);
    }
    sendJson(res, 200, {});
  }));

  app.put(`${C}/sendToDevice/:type/:txnId`, handler((req, res) => {
    const sender = ctx.requester(req);
    const messages = ((req.body ?? {}) as { messages?: Record<string, Record<string, Record<string, unknown>>> }).messages ?? {};
    const out: Record<string, unknown>[] = [];
    for (const [userId, devices] of Object.entries(messages)) {
      if (!interest.isInterestedInUser(userId)) continue;
      for (const [deviceId, content] of Object.entries(devices)) {
        out.push({ to_user_id: userId, to_device_id: deviceId, type: String(req.params.type), sender, content });
      }
    }
    pusher.enqueueToDevice(out);
    sendJson(res, 200, {});
  }));
}
