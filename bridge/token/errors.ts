/**
 * Errors on the token service's wire. Every Matrix-style failure is a `MatrixError` carrying its
 * status, errcode and verbatim text (matrixrtc-auth-service.md §3, §12-§15); handlers throw them
 * and one function writes them. The legacy endpoints wrap every response, errors and 405s too,
 * in lk-jwt-service's CORS JSON headers; JSON bodies end in `\n` as Go's encoder writes them.
 */
import type { Response } from 'express';

export class MatrixError extends Error {
  readonly status: number;
  readonly errcode: string;
  constructor(status: number, errcode: string, message: string) {
    super(message);
    this.name = 'MatrixError';
    this.status = status;
    this.errcode = errcode;
  }
}

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

/** Sets headers verbatim (express's `res.set` would append a charset to Content-Type). */
export function setHeaders(res: Response, headers: Readonly<Record<string, string>>): void {
  for (const [name, value] of Object.entries(headers)) res.setHeader(name, value);
}

export function sendJson(res: Response, status: number, body: unknown, headers: Readonly<Record<string, string>> = {}): void {
  setHeaders(res, { ...headers, 'Content-Type': 'application/json' });
  res.status(status);
  res.end(`${JSON.stringify(body)}\n`);
}

export function sendMatrixError(res: Response, err: MatrixError, headers: Readonly<Record<string, string>> = {}): void {
  sendJson(res, err.status, { errcode: err.errcode, error: err.message }, headers);
}

/** Go's `http.NotFound`, which lk-jwt-service's mux answers for unknown paths. */
export function sendGoNotFound(res: Response): void {
  setHeaders(res, { 'Content-Type': 'text/plain; charset=utf-8', 'X-Content-Type-Options': 'nosniff' });
  res.status(404);
  res.end('404 page not found\n');
}
