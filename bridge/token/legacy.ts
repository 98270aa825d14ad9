/**
 * The OpenID-authenticated endpoints of lk-jwt-service: `POST /sfu/get` (deprecated),
 * `POST /get_token` and `POST /delegate_delayed_leave`, with its request fields, validation
 * order, errcodes, statuses and verbatim texts (matrixrtc-auth-service.md §1-§8), its CORS
 * wrapper on every answer, OPTIONS → 200 and other methods → 405. Deliberate differences:
 * unknown JSON fields are ignored; with an appservice registration a token is issued only to a
 * member of the Matrix room (403 M_FORBIDDEN otherwise; `membership_check` in config.ts); and
 * OpenID tokens of a server whose client-server URL is configured are checked there (openid.ts).
 * What a token grants comes from grants.ts, as for the proxied endpoints.
 */
import type { Request, RequestHandler, Response } from 'express';
import { decodeBody, GET_TOKEN_SPEC, readBody, SFU_GET_SPEC } from './body.ts';
import { createSfuRoom, type TokenContext } from './context.ts';
import { DELEGATION_RESTRICTED, grantsFor, type Grants } from './grants.ts';
import { JobRejectedError, ShuttingDownError } from './delayed-leave.ts';
import {
  badJson,
  csApiUnresolvable,
  internalError,
  LEGACY_CORS_HEADERS,
  MatrixError,
  respond,
  setHeaders,
  shuttingDown,
  unauthorised,
} from './errors.ts';
import { OpenIdVerificationError } from './federation.ts';
import { FederationBusyError } from './outbound-limits.ts';
import {
  LEGACY_SLOT_ID,
  legacyLiveKitIdentity,
  liveKitIdentityForMember,
  liveKitRoomAlias,
  type LiveKitIdentity,
  type LiveKitRoomName,
} from './names.ts';

const DELAY_PAIR = 'The request body is missing `delay_id` or `delay_timeout`';

/** Wraps a POST handler in lk-jwt-service's CORS/OPTIONS/405 behaviour and error mapping. */
export function legacyEndpoint(ctx: TokenContext, name: string, handle: (req: Request) => Promise<unknown>): RequestHandler {
  return async (req: Request, res: Response) => {
    setHeaders(res, LEGACY_CORS_HEADERS);
    if (req.method === 'OPTIONS') {
      res.status(200).end();
      return;
    }
    if (req.method !== 'POST') {
      res.status(405).end();
      return;
    }
    await respond(ctx, res, name, LEGACY_CORS_HEADERS, () => handle(req));
  };
}

async function verifyOpenId(ctx: TokenContext, accessToken: string, serverName: string): Promise<string> {
  try {
    return await ctx.openId.verify(accessToken, serverName);
  } catch (err) {
    if (err instanceof FederationBusyError) throw err; // 503 Retry-After, not the client's fault
    if (err instanceof OpenIdVerificationError) {
      ctx.logger.info({ serverName, reason: err.message }, 'OpenID token rejected');
    } else {
      ctx.logger.warn({ serverName, err: (err as Error).message }, 'OpenID verification failed');
    }
    throw unauthorised();
  }
}

function hasDelay(delayId: string, delayTimeout: number): boolean {
  return delayId !== '' || delayTimeout > 0;
}

function checkDelayPair(delayId: string, delayTimeout: number): void {
  if ((delayId !== '') !== (delayTimeout > 0)) throw badJson(DELAY_PAIR);
}

async function mint(ctx: TokenContext, room: LiveKitRoomName, identity: LiveKitIdentity, grants: Grants): Promise<string> {
  try {
    return await ctx.minter.mint(room, identity, grants.canPublish);
  } catch (err) {
    ctx.logger.error({ err: (err as Error).message }, 'could not mint a LiveKit token');
    throw internalError();
  }
}


async function resolveCsApi(ctx: TokenContext, serverName: string): Promise<void> {
  try {
    await ctx.csApi.resolve(serverName);
  } catch (err) {
    ctx.logger.info({ serverName, err: (err as Error).message }, 'client-server API unresolvable');
    throw csApiUnresolvable();
  }
}

async function addJob(ctx: TokenContext, params: Parameters<TokenContext['delayedLeave']['add']>[0]): Promise<void> {
  try {
    await ctx.delayedLeave.add(params);
  } catch (err) {
    if (err instanceof ShuttingDownError) throw shuttingDown();
    if (err instanceof JobRejectedError) throw badJson(err.message);
    ctx.logger.error({ err: (err as Error).message }, 'could not store the delayed-leave job');
    throw shuttingDown();
  }
}

/** Steps 6-8 shared by /sfu/get and /get_token once the identity is known. */
async function issue(
  ctx: TokenContext,
  o: { serverName: string; userId: string; roomId: string; room: LiveKitRoomName; identity: LiveKitIdentity; delayId: string; delayTimeout: number },
): Promise<{ url: string; jwt: string }> {
  const grants = grantsFor(ctx, o.serverName);
  const delegated = hasDelay(o.delayId, o.delayTimeout);
  if (delegated && !grants.mayDelegate) throw badJson(DELEGATION_RESTRICTED);
  const jwt = await mint(ctx, o.room, o.identity, grants);
  if (delegated) await resolveCsApi(ctx, o.serverName);
  if (grants.createRoom) await createSfuRoom(ctx, o.room);
  await ctx.monitor?.register({ room: o.room, identity: o.identity, roomId: o.roomId, userId: o.userId });
  if (delegated) {
    await addJob(ctx, {
      delayId: o.delayId,
      delayTimeoutMs: o.delayTimeout,
      serverName: o.serverName,
      room: o.room,
      identity: o.identity,
      userId: o.userId,
    });
  }
  return { url: ctx.livekitUrl, jwt };
}

export async function handleSfuGet(ctx: TokenContext, req: Request): Promise<unknown> {
  const b = decodeBody(await readBody(req), SFU_GET_SPEC);
  if (!b.room) throw badJson('Missing room parameter');
  if (!b.openid_token.access_token || !b.openid_token.matrix_server_name) throw badJson('Missing OpenID token parameters');
  checkDelayPair(b.delay_id, b.delay_timeout);
  const serverName = b.openid_token.matrix_server_name;
  const sub = await verifyOpenId(ctx, b.openid_token.access_token, serverName);
  await ctx.membership.requireJoined(b.room, sub);
  return issue(ctx, {
    serverName,
    userId: sub,
    roomId: b.room,
    room: liveKitRoomAlias(b.room, LEGACY_SLOT_ID),
    identity: legacyLiveKitIdentity(sub, b.device_id),
    delayId: b.delay_id,
    delayTimeout: b.delay_timeout,
  });
}

export async function handleGetToken(ctx: TokenContext, req: Request): Promise<unknown> {
  const b = decodeBody(await readBody(req), GET_TOKEN_SPEC);
  if (!b.room_id || !b.slot_id) throw badJson('The request body is missing `room_id` or `slot_id`');
  if (!b.member.id || !b.member.claimed_user_id || !b.member.claimed_device_id) {
    throw badJson('The request body `member` is missing a `id`, `claimed_user_id` or `claimed_device_id`');
  }
  if (!b.openid_token.access_token || !b.openid_token.matrix_server_name) {
    throw badJson('The request body `openid_token` is missing a `access_token` or `matrix_server_name`');
  }
  checkDelayPair(b.delay_id, b.delay_timeout);
  const serverName = b.openid_token.matrix_server_name;
  const sub = await verifyOpenId(ctx, b.openid_token.access_token, serverName);
  if (sub !== b.member.claimed_user_id) {
    ctx.logger.info({ serverName }, 'OpenID subject differs from claimed_user_id');
    throw unauthorised();
  }
  await ctx.membership.requireJoined(b.room_id, sub);
  return issue(ctx, {
    serverName,
    userId: sub,
    roomId: b.room_id,
    room: liveKitRoomAlias(b.room_id, b.slot_id),
    identity: liveKitIdentityForMember(sub, b.member.claimed_device_id, b.member.id),
    delayId: b.delay_id,
    delayTimeout: b.delay_timeout,
  });
}

export async function handleDelegateDelayedLeave(ctx: TokenContext, req: Request): Promise<unknown> {
  const b = decodeBody(await readBody(req), GET_TOKEN_SPEC);
  if (!b.room_id || !b.slot_id) throw badJson('The request body is missing `room_id` or `slot_id`');
  if (!b.member.id || !b.member.claimed_user_id || !b.member.claimed_device_id) {
    throw badJson('The request body `member` is missing `id`, `claimed_user_id` or `claimed_device_id`');
  }
  if (!b.openid_token.access_token || !b.openid_token.matrix_server_name) {
    throw badJson('The request body `openid_token` is missing `access_token` or `matrix_server_name`');
  }
  if (!b.delay_id || !(b.delay_timeout > 0)) throw badJson(DELAY_PAIR);
  const serverName = b.openid_token.matrix_server_name;
  const sub = await verifyOpenId(ctx, b.openid_token.access_token, serverName);
  if (sub !== b.member.claimed_user_id) throw unauthorised();
  if (!grantsFor(ctx, serverName).mayDelegate) throw new MatrixError(403, 'M_FORBIDDEN', DELEGATION_RESTRICTED);
  await resolveCsApi(ctx, serverName);
  await addJob(ctx, {
    delayId: b.delay_id,
    delayTimeoutMs: b.delay_timeout,
    serverName,
    room: liveKitRoomAlias(b.room_id, b.slot_id),
    identity: liveKitIdentityForMember(sub, b.member.claimed_device_id, b.member.id),
    userId: sub,
  });
  return {};
}
