/**
 * Access-token checks for signalling, as LiveKit does them (protocol auth/verifier.go,
 * server pkg/service/auth.go + utils.go): HS256 only, `iss` selects the API key's secret,
 * `exp` mandatory, 60 s leeway on `exp`/`nbf`, identity = `sub` (else `jti`), joining needs
 * `video.roomJoin` and a room. Every refusal is an `AuthError` carrying LiveKit's HTTP status
 * and plain-text body. Also mints the `refresh_token` LiveKit sends to connected clients.
 */
import { RoomConfiguration, type RoomAgentDispatch } from '@livekit/protocol';
import { SignJWT, type JWTPayload } from 'jose';
import { AuthError, verifyAccessToken, type VideoGrant } from '../access-token.ts';

/** LiveKit's tokenDefaultTTL for refreshed tokens. */
export const REFRESH_TOKEN_TTL_S = 10 * 60;

export { AuthError, type VideoGrant } from '../access-token.ts';

export interface JoinClaims {
  apiKey: string;
  identity: string;
  name: string;
  metadata: string;
  attributes: Record<string, string>;
  room: string;
  video: VideoGrant;
  /** Seconds since the epoch (iat, else nbf, else 0). */
  issuedAt: number;
  /** `roomConfig.agents` (livekit-server-sdk AccessToken.roomConfig, protojson). */
  roomAgents: RoomAgentDispatch[];
  /** The verified payload, kept to mint refresh tokens with the same grants. */
  payload: JWTPayload;
}

/** Effective permissions with LiveKit's defaults for absent grants. */
export interface JoinPermissions {
  canPublish: boolean;
  canSubscribe: boolean;
  canPublishData: boolean;
  canUpdateMetadata: boolean;
  canPublishSources: string[];
  hidden: boolean;
  recorder: boolean;
  agent: boolean;
}

export function permissionsOf(video: VideoGrant): JoinPermissions {
  const canPublish = video.canPublish ?? true;
  return {
    canPublish,
    canSubscribe: video.canSubscribe ?? true,
    canPublishData: video.canPublishData ?? canPublish,
    canUpdateMetadata: video.canUpdateOwnMetadata ?? false,
    canPublishSources: video.canPublishSources ?? [],
    hidden: video.hidden ?? false,
    recorder: video.recorder ?? false,
    agent: video.agent ?? false,
  };
}

function stringMap(value: unknown): Record<string, string> {
  const out: Record<string, string> = {};
  if (value && typeof value === 'object' && !Array.isArray(value)) {
    for (const [k, v] of Object.entries(value)) if (typeof v === 'string') out[k] = v;
  }
  return out;
}

/** The agents of a token's `roomConfig`; a roomConfig that is not a RoomConfiguration is refused. */
function roomAgentsOf(raw: unknown): RoomAgentDispatch[] {
  if (raw === undefined || raw === null) return [];
  try {
    return RoomConfiguration.fromJson(raw as never, { ignoreUnknownFields: true }).agents;
  } catch (err) {
    throw new AuthError(401, `invalid authorization token: roomConfig: ${(err as Error).message}`);
  }
}

/** Full join check: token, roomJoin grant, identity, room. */
export async function verifyJoinToken(
  token: string,
  keys: Readonly<Record<string, string>>,
  nowMs: number,
): Promise<JoinClaims> {
  const { apiKey, payload } = await verifyAccessToken(token, keys, nowMs);
  const video = (payload.video && typeof payload.video === 'object' ? payload.video : {}) as VideoGrant;
  if (!payload.video || video.roomJoin !== true) throw new AuthError(401, 'permissions denied');
  const identity = typeof payload.sub === 'string' && payload.sub ? payload.sub : (payload.jti ?? '');
  if (!identity) throw new AuthError(400, 'identity cannot be empty');
  const room = typeof video.room === 'string' ? video.room : '';
  if (!room) throw new AuthError(400, 'no room name');
  return {
    apiKey,
    identity,
    name: typeof payload.name === 'string' ? payload.name : '',
    metadata: typeof payload.metadata === 'string' ? payload.metadata : '',
    attributes: stringMap(payload.attributes),
    room,
    video,
    issuedAt: payload.iat ?? payload.nbf ?? 0,
    roomAgents: roomAgentsOf(payload.roomConfig),
    payload,
  };
}

/** A new token with the same claims, valid for LiveKit's default TTL from now. */
export async function mintRefreshToken(claims: JoinClaims, secret: string, nowMs: number): Promise<string> {
  const now = Math.floor(nowMs / 1000);
  const { exp: _exp, nbf: _nbf, iat: _iat, ...rest } = claims.payload;
  return new SignJWT(rest)
    .setProtectedHeader({ alg: 'HS256' })
    .setIssuedAt(now)
    .setNotBefore(now)
    .setExpirationTime(now + REFRESH_TOKEN_TTL_S)
    .sign(new TextEncoder().encode(secret));
}
