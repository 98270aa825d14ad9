/**
 * The bridge process's edge: one HTTP listener (`LIVEKIT_JWT_BIND`, default :8080) serving the
 * token endpoints, the appservice API, `/healthz` and `/metrics`. Built by
 * `createBridgeServer(deps)`; feature modules mount their routers on `app` before `start()`.
 * Every route sits between the two guards of common/http.ts: unread bodies first (bounded
 * drain or `Connection: close`), and, appended by `start()` after every feature route, the
 * error handler that answers an exception in one request's code with 500 `M_UNKNOWN`.
 */
import { createServer, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import express, { type Express } from 'express';
import type { Registry } from 'prom-client';
import type { Clock } from '../common/clock.ts';
import type { Logger } from '../common/logger.ts';
import { answerHealthz, closeServer, guardUnreadBodies, listen, requestErrorHandler, urlOf } from '../common/http.ts';
import { createMetricsRegistry, serveMetrics } from '../common/metrics.ts';
import type { BridgeConfig } from './config.ts';

export interface BridgeDeps {
  config: BridgeConfig;
  logger: Logger;
  clock: Clock;
  metrics?: Registry;
  /** Extra registries served on this listener's `/metrics` (embedded mode: the SFU's). */
  extraMetrics?: Registry[];
}

export interface BridgeServer {
  readonly app: Express;
  readonly metrics: Registry;
  start(): Promise<{ url: string; address: AddressInfo }>;
  stop(): Promise<void>;
}

/** Errors on this listener in the Matrix shape every bridge endpoint uses. */
function matrixErrorAnswer(res: ServerResponse, status: number, message: string): void {
  const body = JSON.stringify({ errcode: status === 413 ? 'M_TOO_LARGE' : status >= 500 ? 'M_UNKNOWN' : 'M_BAD_JSON', error: message });
  res.writeHead(status, { 'Content-Type': 'application/json', 'Content-Length': Buffer.byteLength(body) });
  res.end(body);
}

export function createBridgeServer(deps: BridgeDeps): BridgeServer {
  const { config, logger } = deps;
  const metrics = deps.metrics ?? createMetricsRegistry();
  const app = express();
  app.disable('x-powered-by');
  app.use(guardUnreadBodies());
  app.all('/healthz', (req, res) => answerHealthz(req, res));
  app.get('/metrics', (req, res) => void serveMetrics([metrics, ...(deps.extraMetrics ?? [])], req, res));
  const server: Server = createServer(app);

  return {
    app,
    metrics,
    async start() {
      app.use(requestErrorHandler({ logger, metrics, answer: matrixErrorAnswer }));
      const address = await listen(server, config.bind.host, config.bind.port);
      const url = urlOf(address);
      logger.info({ url }, 'bridge listening');
      return { url, address };
    },
    async stop() {
      await closeServer(server);
    },
  };
}
