/**
 * The bridge process's edge: one HTTP listener (`LIVEKIT_JWT_BIND`, default :8080) serving the
 * token endpoints, the appservice API, `/healthz` and `/metrics`. Built by
 * `createBridgeServer(deps)`; feature modules mount their routers on `app` before `start()`.
 */
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import express, { type Express } from 'express';
import type { Registry } from 'prom-client';
import type { Clock } from '../common/clock.ts';
import type { Logger } from '../common/logger.ts';
import { answerHealthz, closeServer, listen, urlOf } from '../common/http.ts';
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

export function createBridgeServer(deps: BridgeDeps): BridgeServer {
  const { config, logger } = deps;
  const metrics = deps.metrics ?? createMetricsRegistry();
  const app = express();
  app.disable('x-powered-by');
  app.all('/healthz', (req, res) => answerHealthz(req, res));
  app.get('/metrics', (req, res) => void serveMetrics([metrics, ...(deps.extraMetrics ?? [])], req, res));
  const server: Server = createServer(app);

  return {
    app,
    metrics,
    async start() {
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
