/**
 * API token checks for the RoomService edge, as LiveKit's HTTP middleware and grant checks do
 * them (livekit pkg/service/auth.go, protocol auth/verifier.go): HS256 only, `iss` names the API
 * key whose secret verifies it, `exp` required, 60 s leeway, time from the injected clock.
 * Verification itself is sfu/access-token.ts, shared with signalling.
 * A present but bad token is an `AuthRejection` (plain-text 401 before Twirp); a missing token
 * gives empty grants, so the method's grant check answers Twirp `unauthenticated`.
 */
import { AuthError, verifyAccessToken, type VideoGrant as FullVideoGrant } from '../access-token.ts';
import type { Clock } from '../../common/clock.ts';
import { TwirpError } from './errors.ts';

/** The `video` grant fields the RoomService checks (protocol auth/grants.go). */
export type VideoGrant = Pick<FullVideoGrant, 'roomCreate' | 'roomList' | 'roomAdmin' | 'roomJoin' | 'room'> & {
  roomRecord?: boolean;
};

export interface ApiGrants {
  /** The API key (`iss`) that signed the token, or undefined without a token. */
  apiKey?: string;
  video?: VideoGrant;
}

/** A token that is present but unusable: answered as plain-text 401 before Twirp. */
export class AuthRejection extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'AuthRejection';
  }
}

const BEARER = 'Bearer ';

export interface TokenVerifier {
  /** Checks the `Authorization` header (or `access_token` query value); throws AuthRejection. */
  verify(authorization: string | undefined, queryToken?: string | null): Promise<ApiGrants>;
}

function parseVideoGrant(raw: unknown): VideoGrant | undefined {
  if (!raw || typeof raw !== 'object') return undefined;
  const v = raw as Record<string, unknown>;
  const bool = (k: string) => (typeof v[k] === 'boolean' ? (v[k] as boolean) : undefined);
  return {
    roomCreate: bool('roomCreate'),
    roomList: bool('roomList'),
    roomAdmin: bool('roomAdmin'),
    roomJoin: bool('roomJoin'),
    roomRecord: bool('roomRecord'),
    room: typeof v.room === 'string' ? v.room : undefined,
  };
}

export function createTokenVerifier(deps: { keys: Record<string, string>; clock: Clock }): TokenVerifier {
  return {
    async verify(authorization, queryToken) {
      let token: string;
      if (authorization) {
        if (!authorization.startsWith(BEARER)) {
          throw new AuthRejection('invalid authorization header. Must start with Bearer ');
        }
        token = authorization.slice(BEARER.length).trim();
      } else if (queryToken) {
        token = queryToken;
      } else {
        return {};
      }
      try {
        const { apiKey, payload } = await verifyAccessToken(token, deps.keys, deps.clock.now());
        return { apiKey, video: parseVideoGrant(payload.video) };
      } catch (err) {
        if (err instanceof AuthError) throw new AuthRejection(err.message);
        throw err;
      }
    },
  };
}

const denied = () => new TwirpError('unauthenticated', 'permissions denied');

/** `roomCreate` (CreateRoom, DeleteRoom). */
export function ensureCreatePermission(grants: ApiGrants): void {
  if (!grants.video?.roomCreate) throw denied();
}

/** `roomList` (ListRooms). */
export function ensureListPermission(grants: ApiGrants): void {
  if (!grants.video?.roomList) throw denied();
}

/** `roomAdmin` and `room` equal to the request's room (LiveKit's EnsureAdminPermission). */
export function ensureAdminPermission(grants: ApiGrants, room: string): void {
  const video = grants.video;
  if (!video?.roomAdmin || (video.room ?? '') !== room) throw denied();
}
