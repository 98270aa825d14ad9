/**
 * Mints LiveKit access tokens with `jose`, with the claims lk-jwt-service's `getJoinToken` puts
 * in (livekit/protocol `auth/accesstoken.go`): HS256 with the API secret, `iss` = API key,
 * `sub` and `identity` = the LiveKit identity, `nbf` = `iat` = now, `exp` = now + 1 h, and a
 * `video` grant of roomJoin, room, canPublish, canSubscribe and canUpdateOwnMetadata only.
 */
import { SignJWT } from 'jose';
import type { Clock } from '../../common/clock.ts';
import type { LiveKitIdentity, LiveKitRoomName } from './names.ts';

export const TOKEN_LIFETIME_SECONDS = 3600;

export class TokenMintError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'TokenMintError';
  }
}

export interface TokenMinter {
  mint(room: LiveKitRoomName, identity: LiveKitIdentity, canPublish: boolean): Promise<string>;
}

export function createTokenMinter(deps: { clock: Clock; apiKey: string; apiSecret: string }): TokenMinter {
  const secret = new TextEncoder().encode(deps.apiSecret);
  return {
    async mint(room, identity, canPublish) {
      if (!deps.apiKey || !deps.apiSecret) throw new TokenMintError('LiveKit key or secret is empty');
      const now = Math.floor(deps.clock.now() / 1000);
      return new SignJWT({
        video: { roomJoin: true, room, canPublish, canSubscribe: true, canUpdateOwnMetadata: true },
        identity,
      })
        .setProtectedHeader({ alg: 'HS256', typ: 'JWT' })
        .setIssuer(deps.apiKey)
        .setSubject(identity)
        .setIssuedAt(now)
        .setNotBefore(now)
        .setExpirationTime(now + TOKEN_LIFETIME_SECONDS)
        .sign(secret);
    },
  };
}
