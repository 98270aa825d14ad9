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
  constructor(status: number, errcode: string, message: string) {
    super(message);
    this.name = 'MatrixError';
    this.status = status;
    this.errcode = errcode;
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
  sendJson(res, err.status, { errcode: err.errcode, error: err.message }, headers);
}
