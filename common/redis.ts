/**
 * The one place that makes ioredis connections, for a single node (`redis://` URL or
 * host:port), a Sentinel group or a Cluster. Connection errors are logged, never thrown at the
 * process: ioredis reconnects by itself and callers see failed commands instead.
 */
import { Redis, Cluster, type RedisOptions } from 'ioredis';
import type { Logger } from './logger.ts';

export interface RedisSettings {
  /** `redis://[user:pass@]host:port[/db]` or `rediss://…`; wins over `address`. */
  url?: string;
  /** `host:port` of a single node. */
  address?: string;
  username?: string;
  password?: string;
  db?: number;
  useTls?: boolean;
  sentinelMasterName?: string;
  sentinelAddresses?: string[];
  sentinelUsername?: string;
  sentinelPassword?: string;
  clusterAddresses?: string[];
  /** Prefix for every key, so several deployments can share one Redis. */
  keyPrefix?: string;
  /**
   * Fail a command after this many ms instead of waiting for a reconnect, and queue nothing
   * while disconnected: for callers that must fall back at once (the SFU's room placement).
   */
  failFastMs?: number;
}

export type RedisClient = Redis | Cluster;

function hostPort(addr: string): { host: string; port: number } {
  const i = addr.lastIndexOf(':');
  if (i <= 0) return { host: addr, port: 6379 };
  return { host: addr.slice(0, i).replace(/^\[|\]$/g, ''), port: Number(addr.slice(i + 1)) };
}

export function isRedisConfigured(s: RedisSettings): boolean {
  return Boolean(s.url || s.address || s.sentinelAddresses?.length || s.clusterAddresses?.length);
}

export function createRedisConnection(settings: RedisSettings, logger: Logger): RedisClient {
  const common: RedisOptions = {
    username: settings.username || undefined,
    password: settings.password || undefined,
    db: settings.db ?? 0,
    keyPrefix: settings.keyPrefix,
    maxRetriesPerRequest: settings.failFastMs ? 0 : 3,
    enableOfflineQueue: !settings.failFastMs,
    ...(settings.failFastMs ? { commandTimeout: settings.failFastMs, connectTimeout: settings.failFastMs * 2 } : {}),
    ...(settings.useTls ? { tls: {} } : {}),
  };
  let client: RedisClient;
  if (settings.clusterAddresses?.length) {
    client = new Cluster(settings.clusterAddresses.map(hostPort), { redisOptions: common });
  } else if (settings.sentinelAddresses?.length) {
    client = new Redis({
      ...common,
      sentinels: settings.sentinelAddresses.map(hostPort),
      name: settings.sentinelMasterName,
      sentinelUsername: settings.sentinelUsername || undefined,
      sentinelPassword: settings.sentinelPassword || undefined,
    });
  } else if (settings.url) {
    client = new Redis(settings.url, common);
  } else if (settings.address) {
    client = new Redis({ ...common, ...hostPort(settings.address) });
  } else {
    throw new Error('redis: no address, url, sentinel or cluster addresses configured');
  }
  let lastError = '';
  client.on('error', (err: Error) => {
    // ioredis repeats the same error on every reconnect attempt; log each distinct one once.
    if (err.message !== lastError) logger.warn({ err: err.message }, 'redis connection error');
    lastError = err.message;
  });
  client.on('ready', () => {
    lastError = '';
    logger.info('redis connected');
  });
  return client;
}
