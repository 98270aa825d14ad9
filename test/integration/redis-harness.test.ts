/**
 * The real-Redis harness and our connection factory: a Debian redis-server started on a free
 * loopback port answers commands through createRedisConnection, and is gone after stop().
 */
import { afterEach, describe, expect, it } from 'vitest';
import { createRedisConnection, type RedisClient } from '../../common/redis.ts';
import { createSilentLogger } from '../../common/logger.ts';
import { startRedisServer, type RunningRedis } from '../support/redis-server.ts';
import { Socket } from 'node:net';

async function canConnect(port: number): Promise<boolean> {
  return await new Promise((resolve) => {
    const s = new Socket();
    s.once('error', () => resolve(false));
    s.connect(port, '127.0.0.1', () => {
      s.destroy();
      resolve(true);
    });
  });
}

describe('redis harness', () => {
  let redis: RunningRedis | undefined;
  let client: RedisClient | undefined;
  afterEach(async () => {
    client?.disconnect();
    client = undefined;
    await redis?.stop();
    redis = undefined;
  });

  it('round-trips values with a key prefix through a real redis-server and stops it', async () => {
    redis = await startRedisServer();
    client = createRedisConnection({ url: redis.url, keyPrefix: 'test:' }, createSilentLogger());
    await client.set('greeting', 'hello', 'EX', 60);
    expect(await client.get('greeting')).toBe('hello');
    // The prefix is applied on the wire: a raw KEYS shows it.
    expect(await client.call('KEYS', '*')).toEqual(['test:greeting']);
    const port = redis.port;
    client.disconnect();
    client = undefined;
    await redis.stop();
    redis = undefined;
    expect(await canConnect(port)).toBe(false);
  });

  it('connects by host:port address as well as by URL', async () => {
    redis = await startRedisServer();
    client = createRedisConnection({ address: `127.0.0.1:${redis.port}` }, createSilentLogger());
    expect(await client.ping()).toBe('PONG');
  });
});
