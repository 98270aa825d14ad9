/**
 * The SFU process's edge: one HTTP listener (LiveKit's `port`, default 7880) that serves health,
 * metrics and, as later modules register them, WebSocket signalling and the RoomService API.
 * Built by `createSfuServer(deps)`; `start()` binds, `stop()` closes everything it opened. Two
 * instances can run in one test process.
 */
import { randomBytes } from 'node:crypto';
import { createServer, type IncomingMessage, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import express from 'express';
import type { Registry } from 'prom-client';
import type { Clock } from '../common/clock.ts';
import type { Logger } from '../common/logger.ts';
import { answerHealthz, closeServer, guardUnreadBodies, listen, requestErrorHandler, urlOf } from '../common/http.ts';
import { createMetricsRegistry, serveMetrics } from '../common/metrics.ts';
import { workerCount, type SfuConfig } from './config.ts';
import { createAgentDispatcher, type AgentDispatcher } from './agent/dispatcher.ts';
import { AGENT_PATH, attachAgentSocket } from './agent/socket.ts';
import { createAgentMetrics } from './agent/metrics.ts';
import { createRoomManager, type RoomManager } from './rtc/room-manager.ts';
import type { MediaTransportFactory } from './rtc/types.ts';
import { createWeriftTransportFactory } from './media/transport.ts';
import { createMediaWorkerPool, type MediaWorkerPool } from './media/workers/pool.ts';
import { attachSignalling, registerSignalRoutes } from './signal/signalling.ts';
import { attachSfuEventMetrics, createSfuMetrics, type SfuMetrics } from './metrics.ts';
import { createRoomServiceHandler } from './twirp/router.ts';
import { createWebhookNotifier, type WebhookNotifier, type WebhookNotifierOptions } from './webhook/notifier.ts';
import { createConnectivityRouter } from './connectivity/router.ts';
import { createLoadMonitor, type CpuTimes } from './rtc/load.ts';
import { createCluster, signalUrlOf, type Cluster } from './routing/cluster.ts';
import { NODE_LOCAL_TWIRP_PREFIX } from './routing/cluster-backend.ts';
import type { RedisClient } from '../common/redis.ts';

export interface SfuDeps {
  config: SfuConfig;
  logger: Logger;
  clock: Clock;
  /** Registry for this SFU's metrics; a fresh one is made when absent. */
  metrics?: Registry;
  /** Media transports; werift with rtc.* from the config when absent (on media workers with `workers` ≥ 2). */
  transportFactory?: MediaTransportFactory;
  /** Test hooks every media worker loads (see WorkerInit.hooks); only with `workers` ≥ 2. */
  mediaWorkerHooks?: { module: string; data?: unknown };
  /** Webhook delivery tuning (retries, backoff, queue bound); URLs and key come from config.webhook. */
  /** CPU time of the process for overload.cpu_load_limit; process.cpuUsage when absent. */
  cpuUsage?: () => CpuTimes;
  /** Redis for the cluster instead of one made from config.redis (tests). */
  redis?: RedisClient;
  /** This node's id (ND_ + random when absent). */
  nodeId?: string;
  webhook?: Partial<Pick<WebhookNotifierOptions, 'maxQueue' | 'maxAttempts' | 'initialBackoffMs' | 'maxBackoffMs' | 'requestTimeoutMs' | 'fetch'>>;
}

export interface SfuServer {
  readonly metrics: Registry;
  /** Rooms of this node: the RoomService backend and the SFU event source. */
  readonly rooms: RoomManager;
  /** Agent workers of this node and the dispatches of its rooms (sfu/agent). */
  readonly agents: AgentDispatcher;
  /** The SFU metric set on `metrics` (hot-path counters for the media layer; see sfu/metrics.ts). */
  readonly sfuMetrics: SfuMetrics;
  /** Present when config.webhook.urls is set. */
  readonly webhooks: WebhookNotifier | undefined;
  /** The media workers, with `workers` ≥ 2 and no `transportFactory` given; else undefined. */
  readonly mediaWorkers: MediaWorkerPool | undefined;
  /** Routing: local, or the Redis cluster when config.redis is set (sfu/routing). */
  readonly cluster: Cluster;
  /** Binds the listeners; resolves with the signalling/API URL (http://host:port). */
  start(): Promise<{ url: string; address: AddressInfo }>;
  /**
   * Clustered nodes, on SIGTERM: no new rooms or connections, participants asked to reconnect
   * through another node, then waits until they are gone or `cluster.drain_seconds` pass.
   * A single node has nothing to move to: this returns at once.
   */
  drain(): Promise<void>;
  stop(): Promise<void>;
}

export function createSfuServer(deps: SfuDeps): SfuServer {
  const { config, logger } = deps;
  const metrics = deps.metrics ?? createMetricsRegistry();
  const app = express();
  app.disable('x-powered-by');
  app.use(guardUnreadBodies());
  // LiveKit answers its health check on `/`; `/healthz` is what our other processes use.
  app.get('/', (_req, res) => {
    res.type('text/plain').send('OK');
  });
  app.all('/healthz', (req, res) => answerHealthz(req, res));
  app.get('/metrics', (req, res) => void serveMetrics([metrics], req, res));

  // The metric set comes first: the media layer counts packets, NACKs and PLIs into it.
  const sfuMetrics = createSfuMetrics(metrics);
  const workers = workerCount(config);
  const mediaWorkers =
    !deps.transportFactory && workers > 1
      ? createMediaWorkerPool({
          count: workers,
          placement: config.worker_placement,
          portRange: [config.rtc.port_range_start, config.rtc.port_range_end],
          nodeIp: config.rtc.node_ip,
          logger: logger.child({ component: 'media' }),
          metrics: sfuMetrics,
          registry: metrics,
          timed: true,
          ...(deps.mediaWorkerHooks ? { hooks: deps.mediaWorkerHooks } : {}),
        })
      : undefined;
  const transportFactory =
    deps.transportFactory ??
    mediaWorkers?.factory ??
    createWeriftTransportFactory({
      config: {
        portRange: [config.rtc.port_range_start, config.rtc.port_range_end],
        nodeIp: config.rtc.node_ip,
        metrics: {
          rtcp: sfuMetrics.rtcp,
          packets: sfuMetrics.packets,
          streams: sfuMetrics.streams,
          forwardLatency: sfuMetrics.forwardLatency,
          transport: sfuMetrics.transport,
        },
      },
      logger: logger.child({ component: 'media' }),
      clock: deps.clock,
    });
  const load = createLoadMonitor({
    config,
    clock: deps.clock,
    logger: logger.child({ component: 'load' }),
    mediaBytes: () => sfuMetrics.mediaBytes(),
    ...(deps.cpuUsage ? { cpuUsage: deps.cpuUsage } : {}),
  });
  const nodeId = deps.nodeId ?? `ND_${randomBytes(6).toString('hex')}`;
  const rooms = createRoomManager({ config, logger, clock: deps.clock, transportFactory, load, guard: sfuMetrics.guard, nodeId });
  let lastPackets = { at: deps.clock.now(), count: sfuMetrics.mediaPackets(), rate: 0 };
  const cluster = createCluster({
    config,
    logger,
    clock: deps.clock,
    rooms,
    registry: metrics,
    nodeId,
    ...(deps.redis ? { redis: deps.redis } : {}),
    load: {
      cpuLoad: () => load.cpuLoad(),
      bytesPerSec: () => load.bytesPerSec(),
      packetsPerSec: () => {
        const now = deps.clock.now();
        if (now - lastPackets.at >= 1000) {
          const count = sfuMetrics.mediaPackets();
          lastPackets = { at: now, count, rate: ((count - lastPackets.count) * 1000) / (now - lastPackets.at) };
        }
        return lastPackets.rate;
      },
    },
  });

  // RoomService (Twirp), webhooks and session metrics: edges over the room manager.
  const detachEventMetrics = attachSfuEventMetrics(rooms, sfuMetrics, deps.clock);
  const agents = createAgentDispatcher({ rooms, config, clock: deps.clock, logger, metrics: createAgentMetrics(metrics) });
  app.use(
    '/twirp',
    createRoomServiceHandler({ backend: cluster.backend, agentDispatch: agents, keys: config.keys, clock: deps.clock, logger, metrics: sfuMetrics.twirp }),
  );
  if (cluster.router.clustered) {
    // What the other nodes call for the rooms hosted here (sfu/routing/cluster-backend.ts).
    app.use(NODE_LOCAL_TWIRP_PREFIX, createRoomServiceHandler({ backend: rooms, keys: config.keys, clock: deps.clock, logger }));
  }
  let webhooks: WebhookNotifier | undefined;
  if (config.webhook.urls.length > 0) {
    webhooks = createWebhookNotifier({
      ...deps.webhook,
      urls: config.webhook.urls,
      apiKey: config.webhook.api_key,
      apiSecret: config.keys[config.webhook.api_key] ?? '',
      clock: deps.clock,
      logger,
      metrics: sfuMetrics.webhook,
    });
    webhooks.attach(rooms);
  }
  const signalDeps = {
    otherUpgradePaths: [AGENT_PATH],
    keys: config.keys,
    rooms,
    logger: logger.child({ component: 'signal' }),
    clock: deps.clock,
    limits: config,
    metrics: sfuMetrics.guard,
    route: cluster.route,
    validateElsewhere: cluster.validateElsewhere,
    isRelayed: (req: IncomingMessage) => cluster.isRelayed(req),
    draining: () => cluster.router.draining,
  };
  registerSignalRoutes(app, signalDeps);
  // The connectivity test page (a development aid): only when the config turns it on.
  if (config.connectivity_page) {
    app.use('/test', createConnectivityRouter({ keys: config.keys, clock: deps.clock, logger }));
  }

  // Last: an exception in one request's code answers that request 500 (logged once, counted).
  app.use(requestErrorHandler({ logger, metrics }));

  const server: Server = createServer(app);
  const signalling = attachSignalling(server, signalDeps);
  const agentSocket = attachAgentSocket(server, {
    dispatcher: agents,
    keys: config.keys,
    clock: deps.clock,
    logger: logger.child({ component: 'agent-socket' }),
    maxPayload: config.limit.agent_signal_message_size_limit,
  });
  let metricsServer: Server | undefined;

  return {
    metrics,
    agents,
    rooms,
    sfuMetrics,
    webhooks,
    cluster,
    mediaWorkers,
    async start() {
      const host = config.bind_addresses[0] ?? '::';
      if (config.bind_addresses.length > 1) {
        logger.warn({ bind_addresses: config.bind_addresses }, 'only the first bind address is used');
      }
      await mediaWorkers?.ready();
      const address = await listen(server, host, config.port);
      if (config.prometheus_port) {
        metricsServer = createServer((req, res) => {
          if (req.url === '/metrics') void serveMetrics([metrics], req, res);
          else {
            res.writeHead(404);
            res.end();
          }
        });
        await listen(metricsServer, host, config.prometheus_port);
      }
      const url = urlOf(address);
      await cluster.start(signalUrlOf(config, address.port));
      logger.info(
        { url, node: nodeId, clustered: cluster.router.clustered, workers, mediaOn: mediaWorkers ? 'worker threads' : 'main thread' },
        'sfu listening',
      );
      return { url, address };
    },
    async drain() {
      await cluster.drain(config.cluster.drain_seconds * 1000);
    },
    async stop() {
      await cluster.stop();
      load.stop();
      rooms.close();
      signalling.close();
      // After the rooms: their room_finished ends each job with a termination to its worker.
      agentSocket.close();
      agents.close();
      detachEventMetrics();
      // room_finished / participant_left from the close above still go out, briefly.
      await webhooks?.stop({ drainMs: 2000 });
      await closeServer(server);
      if (metricsServer) await closeServer(metricsServer);
      await mediaWorkers?.stop();
    },
  };
}
