/**
 * Starts a real SFU (sfu/server.ts: signalling + werift media) on loopback for a test, with a
 * test API key, ICE on 127.0.0.1 and tokens minted by livekit-server-sdk. `stop()` closes it.
 */
import { AccessToken, type VideoGrant } from 'livekit-server-sdk';
import { TrackType } from '@livekit/protocol';
import { createSilentLogger, createLogger, type Logger } from '../../common/logger.ts';
import { systemClock, type Clock } from '../../common/clock.ts';
import { parseSfuConfig, type SfuConfig } from '../../sfu/config.ts';
import { createSfuServer, type SfuServer } from '../../sfu/server.ts';
import { createWeriftTransportFactory } from '../../sfu/media/transport.ts';
import type { PacketTap } from '../../sfu/media/forwarder.ts';
import type { WeriftTransportConfig } from '../../sfu/media/peer-config.ts';
import type { MediaTransportFactory } from '../../sfu/rtc/types.ts';

export const TEST_API_KEY = 'testkey';
export const TEST_API_SECRET = 'test-secret-0123456789abcdef-0123456789';

/**
 * The suite's media workers: SFU_TEST_WORKERS=N (the second pass of `npm test` sets 2), else 1.
 * Every SFU a test starts honours it, in process (startTestSfu) or as a child (sfu/main.ts).
 */
export function suiteWorkers(): number {
  return Number(process.env.SFU_TEST_WORKERS ?? '') || 1;
}

/**
 * The `workers` and `worker_placement` config keys for an SFU a test starts some other way than
 * startTestSfu (a child's config, its own parseSfuConfig): empty unless SFU_TEST_WORKERS ≥ 2, and
 * then placement `spread`, so that a room's participants alternate between workers.
 */
export function suiteWorkerConfig(): { workers?: number; worker_placement?: 'spread' } {
  const workers = suiteWorkers();
  return workers > 1 ? { workers, worker_placement: 'spread' } : {};
}

/** suiteWorkerConfig() as YAML lines for a config file (none when workers stay at 1). */
export function suiteWorkerYaml(): string[] {
  const { workers, worker_placement } = suiteWorkerConfig();
  return workers ? [`workers: ${workers}`, `worker_placement: ${worker_placement}`] : [];
}

export interface TestSfu {
  sfu: SfuServer;
  config: SfuConfig;
  /** http://127.0.0.1:port */
  url: string;
  /** ws://127.0.0.1:port, what clients connect to. */
  wsUrl: string;
  token(identity: string, grant?: VideoGrant, opts?: { name?: string; ttl?: number | string; metadata?: string }): Promise<string>;
  stop(): Promise<void>;
}

export async function startTestSfu(
  opts: {
    room?: Record<string, unknown>;
    /** The SFU's `webhook` section (`api_key`, `urls`). */
    webhook?: Record<string, unknown>;
    /** The SFU's `limit`, `signal_limits` and `overload` sections. */
    limit?: Record<string, unknown>;
    signal_limits?: Record<string, unknown>;
    overload?: Record<string, unknown>;
    /** Wraps the werift transport factory (a test double around the real transports). */
    wrapTransports?: (factory: MediaTransportFactory) => MediaTransportFactory;
    /** CPU time the load monitor reads (overload.cpu_load_limit); the process's when absent. */
    cpuUsage?: () => { user: number; system: number };
    clock?: Clock;
    logger?: Logger;
    tap?: PacketTap;
    /** Test hook dropping packets on their way to subscribers (see WeriftTransportConfig). */
    dropOutgoing?: WeriftTransportConfig['dropOutgoing'];
    /** Observer of every werift peer connection the SFU makes (see WeriftTransportConfig). */
    observePeerConnection?: WeriftTransportConfig['observePeerConnection'];
    /** rtc.port_range_start/end (default 40000–49999). */
    portRange?: [number, number];
    /**
     * The SFU's `workers` (media worker threads); default 1, or SFU_TEST_WORKERS for the suite's
     * second pass. Tests with an in-process hook above (tap, dropOutgoing, observePeerConnection,
     * wrapTransports, a clock) keep media on the main thread: their hooks are closures over
     * the test's own state.
     */
    workers?: number;
    /** The SFU's `worker_placement` (default `spread` whenever workers ≥ 2, so rooms span workers). */
    workerPlacement?: 'pack' | 'spread';
    /** Hooks every media worker loads (a module under test/, see WorkerInit.hooks). */
    workerHooks?: { module: string; data?: unknown };
  } = {},
): Promise<TestSfu> {
  const inProcessHooks = Boolean(opts.tap || opts.dropOutgoing || opts.observePeerConnection || opts.wrapTransports || opts.clock);
  const workers = opts.workers ?? (inProcessHooks ? 1 : suiteWorkers());
  const config = parseSfuConfig(
    {
      port: 0,
      workers,
      worker_placement: opts.workerPlacement ?? (workers > 1 ? 'spread' : 'pack'),
      bind_addresses: ['127.0.0.1'],
      keys: { [TEST_API_KEY]: TEST_API_SECRET },
      rtc: {
        node_ip: '127.0.0.1',
        port_range_start: opts.portRange?.[0] ?? 40000,
        port_range_end: opts.portRange?.[1] ?? 49999,
      },
      room: opts.room ?? {},
      ...(opts.webhook ? { webhook: opts.webhook } : {}),
      ...(opts.limit ? { limit: opts.limit } : {}),
      ...(opts.signal_limits ? { signal_limits: opts.signal_limits } : {}),
      // Tests share a process (and its CPU) with their clients: CPU shedding only when asked.
      overload: { cpu_load_limit: 0, ...opts.overload },
      logging: { level: 'warn' },
    },
    'test',
  );
  const logger =
    opts.logger ?? (process.env.SFU_TEST_LOG ? createLogger({ name: 'sfu', level: 'debug' }) : createSilentLogger());
  const clock = opts.clock ?? systemClock;
  // A factory of our own when a test hook is set; made once the server exists, so that it counts
  // into the server's metrics like the default one.
  let own: MediaTransportFactory | undefined;
  const needOwn = Boolean(opts.tap || opts.dropOutgoing || opts.observePeerConnection || opts.wrapTransports);
  const lazy: MediaTransportFactory = (o) => {
    if (!own) throw new Error('transport factory used before the SFU was created');
    return own(o);
  };
  lazy.canAdmit = () => own?.canAdmit?.() ?? true;
  const transportFactory: MediaTransportFactory | undefined = needOwn ? lazy : undefined;
  const sfu = createSfuServer({
    config,
    logger,
    clock,
    ...(transportFactory ? { transportFactory } : {}),
    ...(opts.workerHooks ? { mediaWorkerHooks: opts.workerHooks } : {}),
    ...(opts.cpuUsage ? { cpuUsage: opts.cpuUsage } : {}),
  });
  if (needOwn) {
    const m = sfu.sfuMetrics;
    const werift = createWeriftTransportFactory({
      config: {
        portRange: [config.rtc.port_range_start, config.rtc.port_range_end],
        nodeIp: config.rtc.node_ip,
        metrics: { rtcp: m.rtcp, packets: m.packets, streams: m.streams, transport: m.transport },
        ...(opts.tap ? { tap: opts.tap } : {}),
        ...(opts.dropOutgoing ? { dropOutgoing: opts.dropOutgoing } : {}),
        ...(opts.observePeerConnection ? { observePeerConnection: opts.observePeerConnection } : {}),
      },
      logger,
      clock,
    });
    own = opts.wrapTransports ? opts.wrapTransports(werift) : werift;
  }
  const { url } = await sfu.start();
  return {
    sfu,
    config,
    url,
    wsUrl: url.replace(/^http/, 'ws'),
    async token(identity, grant = { roomJoin: true, room: 'test-room' }, tokenOpts = {}) {
      const at = new AccessToken(TEST_API_KEY, TEST_API_SECRET, {
        identity,
        ttl: tokenOpts.ttl ?? '10m',
        ...(tokenOpts.name !== undefined ? { name: tokenOpts.name } : {}),
        ...(tokenOpts.metadata !== undefined ? { metadata: tokenOpts.metadata } : {}),
      });
      at.addGrant(grant);
      return at.toJwt();
    },
    stop: () => sfu.stop(),
  };
}

/**
 * The media worker of each of `identities` in `room`, or undefined when media runs on the main
 * thread (`workers: 1`). Tests that run in both passes check with it that a room really spans
 * workers in the second one.
 */
export function workersOf(sfu: TestSfu, room: string, identities: string[]): (number | undefined)[] | undefined {
  const pool = sfu.sfu.mediaWorkers;
  if (!pool) return undefined;
  const r = sfu.sfu.rooms.getRoom(room as never);
  return identities.map((id) => {
    const p = r?.participants.get(id as never);
    return p ? pool.workerOf(p.sid) : undefined;
  });
}

/**
 * What the SFU forwards in `room`, one line per subscription: subscriber ← publisher's track
 * kind, enabled or not, wanted quality, packets sent and the layer forwarded (worker proxies
 * report these up to a second late), plus each participant's worker. For a failing test's message.
 */
export function describeForwarding(sfu: TestSfu, room: string): string {
  const r = sfu.sfu.rooms.getRoom(room as never);
  if (!r) return `no room ${room}`;
  const pool = sfu.sfu.mediaWorkers;
  const byId = new Map([...r.participants.values()].map((p) => [p.sid, p.identity]));
  const lines: string[] = [];
  for (const p of r.participants.values()) {
    lines.push(`${p.identity}${pool ? ` on worker ${pool.workerOf(p.sid)}` : ''}: publishes ${[...p.published.values()].map((t) => t.info.sid).join(', ') || 'nothing'}`);
    for (const [sid, sub] of p.subscriptions) {
      const s = sub.down.stats();
      lines.push(
        `  <- ${byId.get(sub.publisher) ?? sub.publisher} ${sid} ${sub.track.info.type === TrackType.VIDEO ? 'video' : 'audio'}: ${sub.disabled ? 'disabled' : 'enabled'}, quality ${sub.quality}, ${s.packetsSent} sent, layer ${s.layer ?? 'none'}`,
      );
    }
  }
  return lines.join('\n');
}
