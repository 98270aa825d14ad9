/**
 * The homeserver-proxied endpoints (MSC4195 through Synapse's MSC4512 appservice proxy;
 * matrixrtc-auth-service.md §12-§15): client-server and server-server `get_token` and
 * client-server `delegate_delayed_leave`. The homeserver authenticates the caller and tells us
 * who it is (`X-Matrix-User-Identifier` for C-S, `X-Matrix-Origin` for S-S); we trust those
 * headers only behind `Authorization: Bearer <hs_token>` (compared in constant time). Both body
 * shapes are accepted: line A's `member` object and line B's `member_id`. What a token grants
 * (publish, room creation, delegation) comes from grants.ts for the user's server, as on the
 * legacy endpoints. A remote `server_name` is relayed to that server through our homeserver's
 * `fed_proxy`.
 */
import type { Request, RequestHandler, Response } from 'express';
import { decodeBody, PROXIED_SPEC, readBody, type ProxiedBody } from './body.ts';
import { createSfuRoom, ownCsApi, type TokenContext } from './context.ts';
import { DELEGATION_RESTRICTED, grantsFor, type Grants } from './grants.ts';
import { JobRejectedError, ShuttingDownError } from './delayed-leave.ts';
import {
  badJson,
  csApiUnresolvable,
  internalError,
  MatrixError,
  PROXIED_CORS_HEADERS,
  sendMatrixError,
  respond,
  setHeaders,
  shuttingDown,
} from './errors.ts';
import { HomeserverError } from '../homeserver/client.ts';
import { bearerToken, tokenMatches } from '../http/secrets.ts';
import {
  liveKitIdentityForMember,
  liveKitIdentityForMemberId,
  liveKitRoomAlias,
  serverNameOfUserId,
  type LiveKitIdentity,
} from './names.ts';

export const CS_PREFIX = '/_matrix/client/unstable/io.element.msc4195/rtc/livekit';
export const SS_GET_TOKEN_PATH = '/_matrix/federation/unstable/io.element.msc4195/rtc/livekit/get_token';

const urlMismatch = () => new MatrixError(400, 'M_INVALID_PARAM', "The request `url` does not match this service's LiveKit URL");
const malformedUser = () => new MatrixError(400, 'M_INVALID_PARAM', 'Malformed user identifier');

function checkHsToken(ctx: TokenContext, req: Request): void {
  const token = bearerToken(req.get('authorization'));
  if (token === undefined) throw new MatrixError(401, 'M_MISSING_TOKEN', 'Missing homeserver access token');
  if (!tokenMatches(token, ctx.appservice!.hsToken)) {
    throw new MatrixError(401, 'M_UNKNOWN_TOKEN', 'Unrecognised homeserver access token');
  }
}

/** POST-only endpoint with hs_token auth, CORS (C-S only) and error mapping. */
export function proxiedEndpoint(
  ctx: TokenContext,
  name: string,
  cors: boolean,
  handle: (req: Request) => Promise<unknown>,
): RequestHandler {
  const headers = cors ? PROXIED_CORS_HEADERS : {};
  return async (req: Request, res: Response) => {
    setHeaders(res, headers);
    if (req.method === 'OPTIONS' && cors) {
      res.status(200).end();
      return;
    }
    if (req.method !== 'POST') {
      sendMatrixError(res, new MatrixError(405, 'M_UNRECOGNIZED', 'Unrecognized request'), headers);
      return;
    }
    await respond(ctx, res, name, headers, () => {
      checkHsToken(ctx, req);
      return handle(req);
    });
  };
}

function headerValue(req: Request, name: string, missing: string): string {
  const v = req.get(name)?.trim();
  if (!v) throw new MatrixError(401, 'M_UNAUTHORIZED', missing);
  return v;
}

/** Decodes and checks that no field the shape needs is empty. */
async function readProxiedBody(req: Request, required: (keyof ProxiedBody)[]): Promise<ProxiedBody> {
  const b = decodeBody(await readBody(req), PROXIED_SPEC);
  for (const field of required) {
    if (!b[field]) throw badJson(`The request body is missing \`${String(field)}\``);
  }
  if (!b.member_id && !(b.member.id && b.member.claimed_device_id)) {
    throw badJson('The request body is missing `member_id` or a `member` with `id` and `claimed_device_id`');
  }
  return b;
}

function identityFor(userId: string, b: ProxiedBody): LiveKitIdentity {
  return b.member_id ? liveKitIdentityForMemberId(userId, b.member_id) : liveKitIdentityForMember(userId, b.member.claimed_device_id, b.member.id);
}

/** The member part of a body relayed to another server, in the shape the client sent. */
function memberPart(b: ProxiedBody): Record<string, unknown> {
  return b.member_id ? { member_id: b.member_id } : { member: { id: b.member.id, claimed_device_id: b.member.claimed_device_id } };
}

async function ourCsApi(ctx: TokenContext): Promise<string> {
  try {
    return await ownCsApi(ctx, ctx.appservice!.serverName);
  } catch (err) {
    ctx.logger.warn({ err: (err as Error).message }, 'client-server API of our homeserver unresolvable');
    throw csApiUnresolvable();
  }
}

async function mintAndCreate(ctx: TokenContext, b: ProxiedBody, userId: string, grants: Grants) {
  const room = liveKitRoomAlias(b.room_id, b.slot_id);
  const identity = identityFor(userId, b);
  let jwt: string;
  try {
    jwt = await ctx.minter.mint(room, identity, grants.canPublish);
  } catch (err) {
    ctx.logger.error({ err: (err as Error).message }, 'could not mint a LiveKit token');
    throw internalError();
  }
  if (grants.createRoom) await createSfuRoom(ctx, room);
  await ctx.monitor?.register({ room, identity, roomId: b.room_id, userId });
  return { jwt };
}

export async function handleCsGetToken(ctx: TokenContext, req: Request): Promise<unknown> {
  const mxid = headerValue(req, 'X-Matrix-User-Identifier', 'Missing request authorization');
  const b = await readProxiedBody(req, ['url', 'room_id', 'slot_id']);
  const ours = ctx.appservice!.serverName;
  const local = !b.server_name || b.server_name === ours;
  if (local && b.url !== ctx.livekitUrl) throw urlMismatch();
  const userServer = serverNameOfUserId(mxid);
  if (!userServer) throw malformedUser();
  await ourCsApi(ctx);
  await ctx.membership.requireJoined(b.room_id, mxid);
  if (local) return mintAndCreate(ctx, b, mxid, grantsFor(ctx, userServer));

  // Remote SFU: ask the destination server's token service through our homeserver.
  const cs = await ourCsApi(ctx);
  let answer: { status: number; content: unknown };
  try {
    answer = await ctx.homeserver.fedProxy(cs, ctx.appservice!.asToken, {
      destination: b.server_name,
      method: 'POST',
      path: SS_GET_TOKEN_PATH,
      body: { url: b.url, user_id: mxid, room_id: b.room_id, slot_id: b.slot_id, ...memberPart(b) },
    });
  } catch (err) {
    ctx.logger.warn({ destination: b.server_name, err: (err as Error).message }, 'fed_proxy failed');
    throw new MatrixError(502, 'M_UNKNOWN', 'Unable to reach the specified homeserver');
  }
  const content = answer.content as Record<string, unknown> | undefined;
  if (answer.status === 403) {
    throw new MatrixError(403, 'M_FORBIDDEN', 'The requesting user is not a member of the room on the destination homeserver');
  }
  if (answer.status === 400 && content?.errcode === 'M_INVALID_PARAM') {
    throw new MatrixError(400, 'M_INVALID_PARAM', 'The destination homeserver rejected the specified `url`');
  }
  if (answer.status < 200 || answer.status >= 300 || typeof content?.jwt !== 'string') {
    throw new MatrixError(502, 'M_UNKNOWN', 'Unable to reach the specified homeserver');
  }
  return { jwt: content.jwt };
}

export async function handleSsGetToken(ctx: TokenContext, req: Request): Promise<unknown> {
  const origin = headerValue(req, 'X-Matrix-Origin', 'Missing request origin');
  const b = await readProxiedBody(req, ['url', 'user_id', 'room_id', 'slot_id']);
  const userServer = serverNameOfUserId(b.user_id);
  if (!userServer) throw malformedUser();
  if (userServer !== origin) throw new MatrixError(403, 'M_FORBIDDEN', 'The user_id does not belong to the origin server');
  await ourCsApi(ctx);
  await ctx.membership.requireJoined(b.room_id, b.user_id);
  if (b.url !== ctx.livekitUrl) throw urlMismatch();
  return mintAndCreate(ctx, b, b.user_id, grantsFor(ctx, userServer));
}

export async function handleCsDelegateDelayedLeave(ctx: TokenContext, req: Request): Promise<unknown> {
  const mxid = headerValue(req, 'X-Matrix-User-Identifier', 'Missing request authorization');
  const b = await readProxiedBody(req, ['url', 'room_id', 'slot_id', 'delay_id']);
  if (b.url !== ctx.livekitUrl) throw urlMismatch();
  const userServer = serverNameOfUserId(mxid);
  if (!userServer) throw malformedUser();
  if (!grantsFor(ctx, userServer).mayDelegate) {
    throw new MatrixError(403, 'M_FORBIDDEN', DELEGATION_RESTRICTED);
  }
  const cs = await ourCsApi(ctx);
  const as = { asToken: ctx.appservice!.asToken, userId: mxid };
  let delayMs = b.delay_timeout;
  if (!(delayMs > 0)) {
    let found;
    try {
      found = await ctx.homeserver.lookupDelayedEvent(cs, b.delay_id, as);
    } catch (err) {
      ctx.logger.warn({ err: (err as Error).message }, 'delayed event look-up failed');
      if (err instanceof HomeserverError) throw new MatrixError(503, 'M_UNKNOWN', 'Unable to look up the delayed event');
      throw err;
    }
    if (!found || found.roomId !== b.room_id) throw new MatrixError(400, 'M_INVALID_PARAM', 'Unknown `delay_id`');
    delayMs = found.delayMs;
  }
  try {
    await ctx.delayedLeave.add({
      delayId: b.delay_id,
      delayTimeoutMs: delayMs,
      serverName: ctx.appservice!.serverName,
      room: liveKitRoomAlias(b.room_id, b.slot_id),
      identity: identityFor(mxid, b),
      asUserId: mxid,
    });
  } catch (err) {
    if (err instanceof ShuttingDownError) throw shuttingDown();
    if (err instanceof JobRejectedError) throw badJson(err.message);
    ctx.logger.error({ err: (err as Error).message }, 'could not store the delayed-leave job');
    throw shuttingDown();
  }
  return {};
}

