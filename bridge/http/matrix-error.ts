/**
 * Matrix errors on the bridge's wire, for every endpoint (appservice API, token service): a
 * `MatrixError` carries its HTTP status, M_* errcode and text, and `sendMatrixError` writes it
 * as `{errcode, error}`. Bodies are written the way lk-jwt-service's Go encoder writes them
 * (`Content-Type: application/json` verbatim, JSON followed by `\n`), so the token service's
 * answers match it byte for byte and the appservice's answers look the same.
 */
import type { Response } from 'express';

export class MatrixError extends Error {
  readonly status: number;
  readonly errcode: string;
  /** Extra response headers (e.g. `Retry-After`) and body fields (e.g. `retry_after_ms`). */
  readonly extra: { headers?: Readonly<Record<string, string>>; fields?: Readonly<Record<string, unknown>> };
  constructor(status: number, errcode: string, message: string, extra: MatrixError['extra'] = {}) {
    super(message);
    this.name = 'MatrixError';
    this.status = status;
    this.errcode = errcode;
    this.extra = extra;
  }
}

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
  sendJson(res, err.status, { errcode: err.errcode, error: err.message, ...err.extra.fields }, { ...headers, ...err.extra.headers });
}
