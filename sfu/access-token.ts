/**
 * LiveKit access-token verification shared by every SFU edge that takes a token (signalling
 * and the RoomService API), as LiveKit does it (protocol auth/verifier.go): HS256 only, `iss`
 * selects the API key's secret, `exp` mandatory, 60 s leeway on `exp`/`nbf`, time from the
 * caller's clock. A refusal is an `AuthError` with LiveKit's HTTP status and plain-text body.
 */
import { decodeJwt, errors as joseErrors, jwtVerify, type JWTPayload } from 'jose';

export const TOKEN_LEEWAY_S = 60;

export class AuthError extends Error {
  readonly status: number;
  constructor(status: number, message: string) {
    super(message);
    this.name = 'AuthError';
    this.status = status;
  }
}

export interface VideoGrant {
  roomJoin?: boolean;
  room?: string;
  roomCreate?: boolean;
  roomAdmin?: boolean;
  roomList?: boolean;
  canPublish?: boolean;
  canSubscribe?: boolean;
  canPublishData?: boolean;
  canPublishSources?: string[];
  canUpdateOwnMetadata?: boolean;
  hidden?: boolean;
  recorder?: boolean;
  agent?: boolean;
}

function describe(err: unknown): string {
  if (err instanceof joseErrors.JWTExpired) return 'token is expired (exp)';
  if (err instanceof joseErrors.JWTClaimValidationFailed) {
    if (err.claim === 'nbf') return 'token is not valid yet (nbf)';
    if (err.claim === 'exp') return 'token has no expiry (exp)';
    return `invalid claim ${err.claim}`;
  }
  if (err instanceof joseErrors.JWSSignatureVerificationFailed) return 'signature is invalid';
  if (err instanceof joseErrors.JOSEAlgNotAllowed) return 'unexpected signing algorithm';
  if (err instanceof joseErrors.JOSEError) return err.message;
  return String(err);
}

/** Verifies a token's signature and times; throws AuthError(401). */
export async function verifyAccessToken(
  token: string,
  keys: Readonly<Record<string, string>>,
  nowMs: number,
): Promise<{ apiKey: string; payload: JWTPayload }> {
  let unverified: JWTPayload;
  try {
    unverified = decodeJwt(token);
  } catch (err) {
    throw new AuthError(401, `invalid authorization token: ${describe(err)}`);
  }
  const apiKey = typeof unverified.iss === 'string' ? unverified.iss : '';
  const secret = Object.hasOwn(keys, apiKey) ? keys[apiKey] : undefined;
  if (!apiKey || secret === undefined) throw new AuthError(401, 'invalid API key');
  try {
    const { payload } = await jwtVerify(token, new TextEncoder().encode(secret), {
      algorithms: ['HS256'],
      clockTolerance: TOKEN_LEEWAY_S,
      currentDate: new Date(nowMs),
      requiredClaims: ['exp'],
    });
    return { apiKey, payload };
  } catch (err) {
    throw new AuthError(401, `invalid authorization token: ${describe(err)}`);
  }
}
