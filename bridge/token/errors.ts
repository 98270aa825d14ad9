/**
 * Errors on the token service's wire: the verbatim Matrix errors of matrixrtc-auth-service.md
 * (§3, §12-§15) as `MatrixError`s (../http/matrix-error.ts, shared with the appservice API);
 * handlers throw them and `sendMatrixError` writes them. The legacy endpoints wrap every
 * response, errors and 405s too, in lk-jwt-service's CORS JSON headers.
 */
import type { Response } from 'express';
import type { TokenContext } from './context.ts';
import { MatrixError, sendJson, sendMatrixError, setHeaders } from '../http/matrix-error.ts';

export { MatrixError, sendJson, sendMatrixError, setHeaders } from '../http/matrix-error.ts';

/** The request body was not JSON of the expected shape. */
export const notJson = (): MatrixError => new MatrixError(400, 'M_NOT_JSON', 'Error reading request');
export const badJson = (message: string): MatrixError => new MatrixError(400, 'M_BAD_JSON', message);
export const unauthorised = (): MatrixError =>
  new MatrixError(401, 'M_UNAUTHORIZED', 'The request could not be authorised.');
export const internalError = (): MatrixError => new MatrixError(500, 'M_UNKNOWN', 'Internal Server Error');
export const notAMember = (): MatrixError =>
  new MatrixError(403, 'M_FORBIDDEN', 'The requesting user is not a member of the room');
export const membershipUnverifiable = (): MatrixError =>
  new MatrixError(502, 'M_UNKNOWN', 'Unable to verify room membership');
export const csApiUnresolvable = (): MatrixError => badJson('Unable to resolve client-server API');
export const roomCreationFailed = (): MatrixError => new MatrixError(500, 'M_UNKNOWN', 'Unable to create room on SFU');
export const shuttingDown = (): MatrixError => new MatrixError(503, 'M_UNKNOWN', 'Service is shutting down');

/** lk-jwt-service's `corsJSON` headers, set on every legacy endpoint response. */
export const LEGACY_CORS_HEADERS: Readonly<Record<string, string>> = {
  'Content-Type': 'application/json',
  'Access-Control-Allow-Origin': '*',
  'Access-Control-Allow-Methods': 'POST',
  'Access-Control-Allow-Headers': 'Accept, Content-Type, Content-Length, Accept-Encoding, X-CSRF-Token',
};

/** CORS on the homeserver-proxied client-server replies. */
export const PROXIED_CORS_HEADERS: Readonly<Record<string, string>> = {
  'Access-Control-Allow-Origin': '*',
  'Access-Control-Allow-Methods': 'POST, OPTIONS',
  'Access-Control-Allow-Headers': 'Authorization, Content-Type, X-Matrix-User-Identifier',
};

/** Go's `http.NotFound`, which lk-jwt-service's mux answers for unknown paths. */
export function sendGoNotFound(res: Response): void {
  setHeaders(res, { 'Content-Type': 'text/plain; charset=utf-8', 'X-Content-Type-Options': 'nosniff' });
  res.status(404);
  res.end('404 page not found\n');
}

/**
 * Runs one token endpoint's handler and answers: its result as 200 JSON, a `MatrixError` as
 * itself, anything else as 500 (logged); each answer counted under `name`.
 */
export async function respond(
  ctx: Pick<TokenContext, 'logger' | 'countRequest'>,
  res: Response,
  name: string,
  headers: Readonly<Record<string, string>>,
  handle: () => Promise<unknown>,
): Promise<void> {
  try {
    const body = await handle();
    sendJson(res, 200, body, headers);
    ctx.countRequest(name, 200);
  } catch (err) {
    const e = err instanceof MatrixError ? err : internalError();
    if (!(err instanceof MatrixError)) ctx.logger.error({ err, endpoint: name }, 'token request failed unexpectedly');
    sendMatrixError(res, e, headers);
    ctx.countRequest(name, e.status);
  }
}
