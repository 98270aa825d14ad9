/**
 * Twirp errors on the wire: one table from Twirp code to HTTP status (twitchtv/twirp errors.go)
 * and the writer of the `{code, msg, meta}` body every RoomService failure answers with, for
 * both encodings. Token failures before Twirp are not here: they answer plain text (auth.ts).
 */
import type { ServerResponse } from 'node:http';

export const TWIRP_STATUS = {
  canceled: 408,
  invalid_argument: 400,
  malformed: 400,
  deadline_exceeded: 408,
  not_found: 404,
  bad_route: 404,
  already_exists: 409,
  permission_denied: 403,
  unauthenticated: 401,
  resource_exhausted: 429,
  failed_precondition: 412,
  aborted: 409,
  out_of_range: 400,
  unimplemented: 501,
  internal: 500,
  unknown: 500,
  unavailable: 503,
  dataloss: 500,
} as const;

export type TwirpCode = keyof typeof TWIRP_STATUS;

export class TwirpError extends Error {
  readonly code: TwirpCode;
  readonly meta: Record<string, string>;
  constructor(code: TwirpCode, message: string, meta: Record<string, string> = {}) {
    super(message);
    this.name = 'TwirpError';
    this.code = code;
    this.meta = meta;
  }
  get status(): number {
    return TWIRP_STATUS[this.code];
  }
}

/** Twirp's `InvalidArgumentError(argument, validationMsg)`: "<argument> <msg>" with meta.argument. */
export function invalidArgument(argument: string, why: string): TwirpError {
  return new TwirpError('invalid_argument', `${argument} ${why}`, { argument });
}

export function writeTwirpError(res: ServerResponse, err: TwirpError): void {
  const body = JSON.stringify({ code: err.code, msg: err.message, meta: err.meta });
  // Exactly `application/json`: the node SDK only parses the error body for that value.
  res.writeHead(err.status, {
    'Content-Type': 'application/json',
    'Content-Length': Buffer.byteLength(body),
  });
  res.end(body);
}
