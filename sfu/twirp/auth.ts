/**
 * API token checks for the RoomService edge, as LiveKit's HTTP middleware and grant checks do
 * them (livekit pkg/service/auth.go, protocol auth/verifier.go): HS256 only, `iss` names the API
 * key whose secret verifies it, `exp` required, 60 s leeway, time from the injected clock.
 * A present but bad token is an `AuthRejection` (plain-text 401 before Twirp); a missing token
 * gives empty grants, so the method's grant check answers Twirp `unauthenticated`.
 */
import { decodeJwt, errors as joseErrors, jwtVerify } from 'jose';
import type { Clock } from '../../common/clock.ts';
import { TwirpError } from './errors.ts';

/** The `video` grant fields the RoomService checks (protocol auth/grants.go). */
export interface VideoGrant {
  roomCreate?: boolean;
  roomList?: boolean;
  roomAdmin?: boolean;
  roomJoin?: boolean;
  roomRecord?: boolean;
  room?: string;
}

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

export const LEEWAY_SECONDS = 60;
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
  const encoder = new TextEncoder();
  const secrets = new Map(Object.entries(deps.keys).map(([k, s]) => [k, encoder.encode(s)]));
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
      let iss: unknown;
      try {
        iss = decodeJwt(token).iss;
      } catch {
        throw new AuthRejection('invalid authorization token');
      }
      if (typeof iss !== 'string' || !iss) throw new AuthRejection('invalid authorization token: no issuer');
      const secret = secrets.get(iss);
      if (!secret) throw new AuthRejection('invalid API key');
      try {
        const { payload } = await jwtVerify(token, secret, {
          algorithms: ['HS256'],
          clockTolerance: LEEWAY_SECONDS,
          currentDate: new Date(deps.clock.now()),
          requiredClaims: ['exp'],
          issuer: iss,
        });
        return { apiKey: iss, video: parseVideoGrant(payload.video) };
      } catch (err) {
        const detail =
          err instanceof joseErrors.JWTExpired
            ? 'token is expired'
            : err instanceof joseErrors.JWTClaimValidationFailed
              ? err.message
              : err instanceof joseErrors.JWSSignatureVerificationFailed
                ? 'signature is invalid'
                : 'token could not be verified';
        throw new AuthRejection(`invalid authorization token: ${detail}`);
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
