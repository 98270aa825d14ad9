/**
 * Shared-secret checks on the bridge's edge: the `hs_token` the homeserver presents to the
 * appservice API and to the homeserver-proxied token endpoints. `Authorization: Bearer` is
 * parsed in one place, and tokens are compared in constant time (hashing first makes the
 * lengths equal, so neither content nor length leaks through timing).
 */
import { createHash, timingSafeEqual } from 'node:crypto';

function sha256(s: string): Buffer {
  return createHash('sha256').update(s).digest();
}

/** Constant-time token comparison. */
export function tokenMatches(given: string, expected: string): boolean {
  return timingSafeEqual(sha256(given), sha256(expected));
}

/** The token of an `Authorization: Bearer <token>` header, or undefined. */
export function bearerToken(header: string | undefined): string | undefined {
  if (typeof header !== 'string') return undefined;
  const m = /^Bearer\s+(.+)$/i.exec(header.trim());
  return m ? m[1] : undefined;
}
