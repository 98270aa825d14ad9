/**
 * `npm run bench -- relay`: what it costs to move a publisher's RTP packets from one media
 * worker thread to another (media transports on N worker threads, a room spanning
 * them). Two real worker threads, a producer and a consumer (bench/_relay-worker.ts), relay
 * packets of 100 B (audio) and 1100 B (video) at 5,000 and 50,000 packets/s offered and at the
 * producer's max rate, through each candidate:
 *
 * - `clone`: `MessagePort.postMessage` of a Uint8Array per packet (structured clone copies it);
 * - `transfer`: one new ArrayBuffer per packet, transferred;
 * - `batch`: all packets of one event-loop turn in one transferred ArrayBuffer, length-prefixed;
 * - `ring-wait` / `ring-bell`: the shared-memory ring (sfu/media/relay-ring.ts), the consumer
 *   woken by `Atomics.waitAsync` or by a one-message doorbell on a MessagePort, only when the
 *   ring goes from empty to non-empty; the consumer copies each packet out (it must, to parse
 *   and cache it); `ring-view` is `ring-bell` reading in place, without that copy;
 * - `baseline`: the producer's loop alone (make the packet, stamp it), no relay: subtracted to
 *   give the relay's own cost.
 *
 * CPU is each thread's own, `process.threadCpuUsage()` (Node ≥ 23.9: user + system time of the
 * calling thread), so the figure is exactly the two threads' work, unlike
 * `eventLoopUtilization` (wall time not idle, which counts time preempted by other
 * processes) or /proc for the whole process (which would add the main thread and
 * V8's helper threads). Latency is one-way, producer stamp to consumer receipt, both
 * `performance.timeOrigin + performance.now()`. Every candidate is bounded the same way (the
 * ring's bytes, or as many packets in flight for the message candidates); what does not fit is
 * dropped and counted. Rounds alternate the candidates within each size × rate cell; medians of
 * rounds are reported. Figures only, nothing passes or fails on time.
 *
 * Knobs: BENCH_RELAY_WINDOW_MS (measured window per cell, 500), BENCH_RELAY_WARMUP_MS (120),
 * BENCH_RELAY_ROUNDS (5), BENCH_RELAY_RATES (comma list, 0 = max; "5000,50000,0"),
 * BENCH_RELAY_SIZES ("100,1100"), BENCH_RELAY_RING_BYTES (1 MiB).
 */
import { MessageChannel, Worker } from 'node:worker_threads';
import { createRelayRing } from '../sfu/media/relay-ring.ts';
import type { LatencyResult, Snap, Variant } from './_relay-worker.ts';

const WINDOW_MS = Number(process.env.BENCH_RELAY_WINDOW_MS ?? 500);
const WARMUP_MS = Number(process.env.BENCH_RELAY_WARMUP_MS ?? 120);
const ROUNDS = Number(process.env.BENCH_RELAY_ROUNDS ?? 5);
const RATES = (process.env.BENCH_RELAY_RATES ?? '5000,50000,0').split(',').map(Number);
const SIZES = (process.env.BENCH_RELAY_SIZES ?? '100,1100').split(',').map(Number);
const RING_BYTES = Number(process.env.BENCH_RELAY_RING_BYTES ?? 1 << 20);
const VARIANTS: Variant[] = ['baseline', 'clone', 'transfer', 'batch', 'ring-wait', 'ring-bell', 'ring-view'];

const round2 = (x: number) => Math.round(x * 100) / 100;
const median = (xs: number[]) => xs.toSorted((a, b) => a - b)[Math.floor(xs.length / 2)]!;
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** One request to a bench thread and its reply (replies come in order: one request at a time). */
class Thread {
  private readonly worker: Worker;
  private readonly waiting: ((m: unknown) => void)[] = [];
  private failure: Error | undefined;

  constructor(role: 'producer' | 'consumer') {
    this.worker = new Worker(new URL('./_relay-worker.ts', import.meta.url), { workerData: { role } });
    this.worker.on('message', (m: unknown) => this.waiting.shift()?.(m));
    this.worker.on('error', (err) => {
      this.failure = err;
      for (const w of this.waiting.splice(0)) w({ error: err.message });
    });
  }

  async ask<T>(msg: object, transfer: Transferable[] = []): Promise<T> {
    if (this.failure) throw this.failure;
    const answer = new Promise<unknown>((resolve) => this.waiting.push(resolve));
    this.worker.postMessage(msg, transfer as never);
    const a = (await answer) as { error?: string };
    if (a.error) throw new Error(`relay bench thread: ${a.error}`);
    return a as T;
  }

  terminate(): Promise<number> {
    return this.worker.terminate();
  }
}

interface Cell {
  producerUs: number;
  consumerUs: number;
  totalUs: number;
  deliveredPps: number;
  offeredPps: number;
  drops: number;
  p50Us: number;
  p99Us: number;
}

const recordBytes = (size: number) => (16 + size + 7) & ~7;

async function measure(producer: Thread, consumer: Thread, variant: Variant, size: number, rate: number): Promise<Cell> {
  const channel = new MessageChannel();
  const setup = {
    type: 'setup',
    variant,
    size,
    rate,
    ring: createRelayRing(RING_BYTES),
    counters: new SharedArrayBuffer(16),
    boundPackets: Math.floor(RING_BYTES / recordBytes(size)),
  };
  await consumer.ask({ ...setup, port: channel.port2 }, [channel.port2]);
  await producer.ask({ ...setup, port: channel.port1 }, [channel.port1]);
  try {
    await producer.ask({ type: 'start' });
    await sleep(WARMUP_MS);
    const [p0, c0] = await Promise.all([producer.ask<Snap>({ type: 'snap' }), consumer.ask<Snap>({ type: 'snap', collect: true })]);
    const t0 = performance.now();
    await sleep(WINDOW_MS);
    const [p1, c1] = await Promise.all([producer.ask<Snap>({ type: 'snap' }), consumer.ask<Snap>({ type: 'snap', collect: false })]);
    const seconds = (performance.now() - t0) / 1000;
    const lat = await consumer.ask<LatencyResult>({ type: 'latency' });
    const offered = p1.offered - p0.offered;
    const received = c1.received - c0.received;
    const pCpu = p1.cpuUs - p0.cpuUs;
    const cCpu = c1.cpuUs - c0.cpuUs;
    return {
      producerUs: pCpu / Math.max(1, offered),
      consumerUs: variant === 'baseline' ? 0 : cCpu / Math.max(1, received),
      totalUs: variant === 'baseline' ? pCpu / Math.max(1, offered) : (pCpu + cCpu) / Math.max(1, received),
      deliveredPps: received / seconds,
      offeredPps: offered / seconds,
      drops: p1.dropped - p0.dropped,
      p50Us: lat.p50Us,
      p99Us: lat.p99Us,
    };
  } finally {
    await producer.ask({ type: 'teardown' });
    await consumer.ask({ type: 'teardown' });
  }
}

export async function run(): Promise<object> {
  if (typeof process.threadCpuUsage !== 'function') throw new Error('relay bench: needs process.threadCpuUsage (Node ≥ 23.9)');
  const producer = new Thread('producer');
  const consumer = new Thread('consumer');
  const started = performance.now();
  try {
    const cells = SIZES.flatMap((size) => RATES.map((rate) => ({ size, rate })));
    const samples = new Map<string, Cell[]>();
    for (let r = 0; r < ROUNDS; r++) {
      for (const { size, rate } of cells) {
        // Rotate the order each round so no candidate always runs first (or after the same one).
        const order = VARIANTS.map((_, i) => VARIANTS[(i + r) % VARIANTS.length]!);
        for (const variant of order) {
          const key = `${variant}|${size}|${rate}`;
          const cell = await measure(producer, consumer, variant, size, rate);
          samples.set(key, [...(samples.get(key) ?? []), cell]);
        }
      }
      console.log(`[relay bench] round ${r + 1}/${ROUNDS} done after ${Math.round((performance.now() - started) / 1000)} s`);
    }
    const results = [];
    for (const { size, rate } of cells) {
      const base = median(samples.get(`baseline|${size}|${rate}`)!.map((c) => c.producerUs));
      for (const variant of VARIANTS) {
        const cs = samples.get(`${variant}|${size}|${rate}`)!;
        const m = (f: (c: Cell) => number) => median(cs.map(f));
        const row = {
          variant,
          payloadBytes: size,
          offeredPps: rate || 'max',
          producerUs: round2(m((c) => c.producerUs)),
          consumerUs: round2(m((c) => c.consumerUs)),
          totalUs: round2(m((c) => c.totalUs)),
          /** Total minus the baseline producer loop: what the relay itself adds per packet. */
          relayUs: variant === 'baseline' ? 0 : round2(m((c) => c.totalUs) - base),
          deliveredPps: Math.round(m((c) => c.deliveredPps)),
          dropsPerWindow: Math.round(m((c) => c.drops)),
          p50Us: m((c) => c.p50Us),
          p99Us: m((c) => c.p99Us),
        };
        console.log(
          `[relay bench] ${variant.padEnd(9)} ${String(size).padStart(4)} B @ ${String(rate || 'max').padStart(5)}: ` +
            `producer ${row.producerUs} + consumer ${row.consumerUs} = ${row.totalUs} µs/packet (relay ${row.relayUs}), ` +
            `${row.deliveredPps} pps delivered, drops ${row.dropsPerWindow}, latency p50 ${row.p50Us} µs p99 ${row.p99Us} µs`,
        );
        results.push(row);
      }
    }
    return {
      cpuClock: 'process.threadCpuUsage() of each thread (user + system)',
      windowMs: WINDOW_MS,
      warmupMs: WARMUP_MS,
      rounds: ROUNDS,
      ringBytes: RING_BYTES,
      statistic: 'median of rounds',
      results,
    };
  } finally {
    await producer.terminate();
    await consumer.terminate();
  }
}
