/**
 * What every route of the fake homeserver shares: Synapse's response headers (chunked JSON,
 * cache-control, Server, CORS; README rule 33), `{errcode, error}` error bodies from
 * `MatrixApiError`, the async route wrapper, token extraction, and the context routes get.
 */
import type { Request, Response } from 'express';
import type { Clock } from '../../common/clock.ts';
import type { AppserviceRegistration } from './appservice-pusher.ts';
import { MatrixApiError, type HomeserverModel } from './model.ts';
import type { Interest } from './registration.ts';

export interface FakeHomeserverContext {
  model: HomeserverModel;
  registration: AppserviceRegistration;
  serverName: string;
  clock: Clock;
  interest: Interest;
  /** OpenID access token -> user id and expiry (ms since epoch on `clock`). */
  openidTokens: Map<string, { userId: string; expiresAt: number }>;
  /** Called for every OpenID token minted (composition with the TLS federation server). */
  onOpenIdToken?: (token: string, userId: string) => void;
  /** `max_event_delay_duration` in ms; undefined = MSC4140 disabled. */
  maxEventDelayMs?: number;
  /** Unstable features newer-Synapse settings add to `/versions` (matrix-rtc.ts). */
  extraUnstableFeatures?: Record<string, boolean>;
  /** Resolves the requesting user of a client-server request (throws MatrixApiError). */
  requester(req: Request): string;
  /** Whether the request carries the appservice's as_token. */
  isAppservice(req: Request): boolean;
}

const SYNAPSE_HEADERS: Record<string, string> = {
  'Content-Type': 'application/json',
  'Cache-Control': 'no-cache, no-store, must-revalidate',
  Server: 'Synapse/1.132.0',
  'Access-Control-Allow-Origin': '*',
  'Access-Control-Allow-Methods': 'GET, HEAD, POST, PUT, DELETE, OPTIONS',
  'Access-Control-Allow-Headers': 'X-Requested-With, Content-Type, Authorization, Date',
  'Access-Control-Expose-Headers': 'Synapse-Trace-Id, Server',
};

/** Synapse answers with chunked transfer encoding and no Content-Length. */
export function sendJson(res: Response, status: number, body: unknown): void {
  res.status(status);
  for (const [k, v] of Object.entries(SYNAPSE_HEADERS)) res.setHeader(k, v);
  res.write(JSON.stringify(body));
  res.end();
}

export function sendError(res: Response, err: unknown): void {
  if (err instanceof MatrixApiError) sendJson(res, err.status, { errcode: err.errcode, error: err.message, ...err.extra });
  else sendJson(res, 500, { errcode: 'M_UNKNOWN', error: (err as Error).message });
}

export function handler(fn: (req: Request, res: Response) => unknown | Promise<unknown>) {
  return (req: Request, res: Response): void => {
    Promise.resolve()
      .then(() => fn(req, res))
      .catch((err: unknown) => sendError(res, err));
  };
}

export function tokenOf(req: Request): string | undefined {
  const h = req.headers.authorization;
  if (typeof h === 'string' && h.startsWith('Bearer ')) return h.slice(7);
  return typeof req.query.access_token === 'string' ? req.query.access_token : undefined;
}
