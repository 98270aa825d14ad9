/**
 * The connectivity test page's edge, mounted by the SFU at `/test` only when `connectivity_page`
 * is on (off by default; `npm start` turns it on). Serves a static page (`page/index.html`), its
 * hand-written browser script (`page/connectivity.js`) and livekit-client's browser build
 * straight from node_modules (no build step, no committed bundle), plus `POST /test/token`: a
 * development aid that mints a short-lived join token with the SFU's first API key. Anyone who
 * can reach the page can mint such tokens, so they are limited to rooms named
 * `connectivity-test-*` and can never join a real call's room.
 */
import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import express, { type Request, type Response, type Router } from 'express';
import { SignJWT } from 'jose';
import type { Clock } from '../../common/clock.ts';
import type { Logger } from '../../common/logger.ts';

/** Dev tokens only open rooms with this prefix, so they never reach a Matrix call's room. */
export const DEV_ROOM_PREFIX = 'connectivity-test-';
export const DEV_TOKEN_TTL_S = 60 * 60;
const MAX_NAME_LENGTH = 128;
const NAME_PATTERN = /^[A-Za-z0-9._~-]+$/;

export interface ConnectivityDeps {
  /** The SFU's API keys; dev tokens are signed with the first one. */
  keys: Record<string, string>;
  clock: Clock;
  logger: Logger;
}

export class DevTokenRequestError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'DevTokenRequestError';
  }
}

export interface DevTokenRequest {
  room: string;
  identity: string;
}

/** Checks a `POST /test/token` body; throws `DevTokenRequestError` naming the bad field. */
export function parseDevTokenRequest(body: unknown): DevTokenRequest {
  if (body === null || typeof body !== 'object' || Array.isArray(body)) {
    throw new DevTokenRequestError(
      'body must be a JSON object {"room": "...", "identity": "..."} sent as Content-Type: application/json',
    );
  }
  const { room, identity } = body as Record<string, unknown>;
  const check = (field: string, value: unknown): string => {
    if (typeof value !== 'string' || value.length === 0) throw new DevTokenRequestError(`${field}: required (a string)`);
    if (value.length > MAX_NAME_LENGTH) throw new DevTokenRequestError(`${field}: longer than ${MAX_NAME_LENGTH} characters`);
    if (!NAME_PATTERN.test(value)) {
      throw new DevTokenRequestError(`${field}: use letters, digits and . _ ~ - only`);
    }
    return value;
  };
  const parsed = { room: check('room', room), identity: check('identity', identity) };
  if (!parsed.room.startsWith(DEV_ROOM_PREFIX) || parsed.room.length === DEV_ROOM_PREFIX.length) {
    throw new DevTokenRequestError(
      `room: dev tokens only join rooms named "${DEV_ROOM_PREFIX}<something>"; paste a token from your token service for other rooms`,
    );
  }
  return parsed;
}

function pageDir(): string {
  return join(dirname(fileURLToPath(import.meta.url)), 'page');
}

/** livekit-client's UMD build (defines `window.LivekitClient`), resolved through its package exports. */
function livekitClientUmdPath(): string {
  return createRequire(import.meta.url).resolve('livekit-client');
}

function noStore(res: Response): void {
  res.set('Cache-Control', 'no-store');
}

export function createConnectivityRouter(deps: ConnectivityDeps): Router {
  const router = express.Router();
  const dir = pageDir();
  const html = readFileSync(join(dir, 'index.html'), 'utf8');
  const script = readFileSync(join(dir, 'connectivity.js'), 'utf8');
  const lkPath = livekitClientUmdPath();
  const apiKey = Object.keys(deps.keys)[0];
  const secret = apiKey === undefined ? undefined : new TextEncoder().encode(deps.keys[apiKey]);
  const log = deps.logger.child({ component: 'connectivity' });

  router.get('/', (req: Request, res: Response) => {
    // Relative asset URLs need the trailing slash (also behind a proxy that adds a prefix).
    if (!req.originalUrl.split('?')[0]!.endsWith('/')) {
      res.redirect(301, `${req.baseUrl.split('/').pop()}/`);
      return;
    }
    noStore(res);
    res.type('html').send(html);
  });
  router.get('/connectivity.js', (_req, res) => {
    noStore(res);
    res.type('text/javascript').send(script);
  });
  router.get('/livekit-client.umd.js', (_req, res) => {
    res.sendFile(lkPath, { maxAge: '1h' });
  });
  router.get('/livekit-client.umd.js.map', (_req, res) => {
    res.sendFile(`${lkPath}.map`, { maxAge: '1h' });
  });

  router.post('/token', express.json({ limit: '4kb' }), (req: Request, res: Response) => {
    noStore(res);
    let parsed: DevTokenRequest;
    try {
      parsed = parseDevTokenRequest(req.body);
    } catch (err) {
      if (!(err instanceof DevTokenRequestError)) throw err;
      res.status(400).json({ error: err.message });
      return;
    }
    if (apiKey === undefined || secret === undefined) {
      res.status(503).json({ error: 'the SFU has no API key to sign dev tokens with' });
      return;
    }
    const now = Math.floor(deps.clock.now() / 1000);
    new SignJWT({
      video: { roomJoin: true, room: parsed.room, canPublish: true, canSubscribe: true, canPublishData: true },
      name: parsed.identity,
    })
      .setProtectedHeader({ alg: 'HS256', typ: 'JWT' })
      .setIssuer(apiKey)
      .setSubject(parsed.identity)
      .setIssuedAt(now)
      .setNotBefore(now)
      .setExpirationTime(now + DEV_TOKEN_TTL_S)
      .sign(secret)
      .then(
        (token) => {
          log.info({ room: parsed.room, identity: parsed.identity }, 'connectivity page: dev token issued');
          res.json({ token });
        },
        (err: unknown) => {
          log.error({ err }, 'connectivity page: signing a dev token failed');
          res.status(500).json({ error: 'signing the token failed' });
        },
      );
  });

  // A malformed JSON body is the client's mistake: answer it in the page's error shape.
  router.use((err: unknown, _req: Request, res: Response, next: (err?: unknown) => void) => {
    const status = (err as { status?: unknown })?.status;
    if (typeof status === 'number' && status >= 400 && status < 500) {
      res.status(status).json({ error: `bad request: ${(err as Error).message}` });
      return;
    }
    next(err);
  });
  return router;
}
