import { describe, expect, it } from 'vitest';
import { Registry } from 'prom-client';
import { createSfuMetrics } from '../../metrics.ts';
import { parseSfuConfig, resolveSfuConfig, workerCount } from '../../config.ts';
import { ConfigError } from '../../../common/config.ts';
import { slicePorts } from './pool.ts';
import { applyMetricBatch, createWorkerMetrics } from './metrics-bridge.ts';

const KEYS = { keys: { key: 'a-secret-of-at-least-32-characters!!' } };
const cfg = (extra: Record<string, unknown>) => parseSfuConfig({ ...KEYS, ...extra }, 'test');

describe('media worker configuration', () => {
  it('reads workers as a count, auto as one per core, and refuses 0', () => {
    expect(workerCount(cfg({}))).toBe(1);
    expect(workerCount(cfg({ workers: 3 }))).toBe(3);
    expect(workerCount(cfg({ workers: 'auto' }))).toBeGreaterThanOrEqual(1);
    expect(() => cfg({ workers: 0 })).toThrow(ConfigError);
    expect(() => cfg({ worker_placement: 'random' })).toThrow(ConfigError);
  });

  it('lets --workers replace the config file value', () => {
    const keysEnv = 'key: a-secret-of-at-least-32-characters!!';
    const c = resolveSfuConfig({ configBody: 'workers: 4\nworker_placement: spread\n', keysEnv, workers: '2' });
    expect(c.workers).toBe(2);
    expect(c.worker_placement).toBe('spread');
    expect(resolveSfuConfig({ keysEnv, workers: 'auto' }).workers).toBe('auto');
    expect(() => resolveSfuConfig({ keysEnv, workers: 'many' })).toThrow(ConfigError);
  });
});

describe('slicePorts', () => {
  it('splits the inclusive range into contiguous slices, the last taking the remainder', () => {
    expect(slicePorts([50000, 60000], 2)).toEqual([
      [50000, 55000 - 1],
      [55000, 60000],
    ]);
    expect(slicePorts([40000, 40010], 3)).toEqual([
      [40000, 40002],
      [40003, 40005],
      [40006, 40010],
    ]);
  });

  it('refuses a range too small for the workers, naming the keys', () => {
    expect(() => slicePorts([40000, 40002], 2)).toThrow(/port_range_start.*too small for 2 media workers/);
  });
});

describe('metrics across the thread boundary', () => {
  it('replays what a worker counted into the main registry and starts a new batch', async () => {
    const registry = new Registry();
    const main = createSfuMetrics(registry);
    const w = createWorkerMetrics();
    w.packets.incoming(100);
    w.packets.incoming(50, true);
    w.packets.outgoing(120);
    w.packets.outgoing(120);
    w.rtcp.nack('incoming', 3);
    w.rtcp.pli('outgoing');
    w.streams.packetLoss('incoming', 'video', 2, 100);
    w.transport.datagramDropped('foreign_address');
    applyMetricBatch(main, w.take());
    expect(main.mediaPackets()).toBe(4);
    expect(main.mediaBytes()).toBe(390);
    const text = await registry.metrics();
    expect(text).toMatch(/livekit_nack_total\{direction="incoming"\} 3/);
    expect(text).toMatch(/livekit_pli_total\{direction="outgoing"\} 1/);
    expect(text).toMatch(/livekit_packet_loss_total\{direction="incoming",kind="video"\} 2/);
    const next = w.take();
    expect(next.packets).toEqual([0, 0, 0, 0]);
    expect(next.rtcp).toEqual([]);
  });

  it('bounds what a worker buffers between two batches', () => {
    const w = createWorkerMetrics();
    for (let i = 0; i < 100_000; i++) {
      w.forwardLatency.observe(0.001);
      w.streams.jitter('incoming', 'audio', 10);
    }
    const batch = w.take();
    expect(batch.latency.length).toBeLessThanOrEqual(4096);
    expect(batch.streams.length).toBeLessThanOrEqual(4096);
  });
});
