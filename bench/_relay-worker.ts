/**
 * One thread of the relay benchmark (bench/relay.ts): `workerData.role` says whether it is the
 * producer (a media worker that received a publisher's packets) or the consumer (a media worker
 * whose subscribers want them). The parent sets up one candidate at a time (`setup`), starts the
 * producer, takes CPU/counter snapshots of both threads (`snap`), stops and tears down.
 *
 * Every candidate moves the same record per packet: u32 length, u32 track id, f64 stamp (ms,
 * `performance.timeOrigin + performance.now()` when the producer handled it), payload. Message
 * candidates are bounded like the ring: the consumer publishes how many packets it has taken in
 * a shared counter, and the producer drops (and counts) a packet that would put more than
 * `boundPackets` in flight.
 */
import { parentPort, workerData, type MessagePort } from 'node:worker_threads';
import { RelayRingReader, RelayRingWriter } from '../sfu/media/relay-ring.ts';

export type Variant = 'baseline' | 'clone' | 'transfer' | 'batch' | 'ring-wait' | 'ring-bell' | 'ring-view';

export interface Setup {
  type: 'setup';
  variant: Variant;
  size: number;
  /** Packets per second offered; 0: as fast as the producer can. */
  rate: number;
  port: MessagePort;
  ring: SharedArrayBuffer;
  /** Int32 [0]: packets the consumer has taken (message candidates). */
  counters: SharedArrayBuffer;
  boundPackets: number;
}

export interface Snap {
  cpuUs: number;
  /** Producer: offered, dropped. Consumer: received. */
  offered: number;
  dropped: number;
  received: number;
}

export interface LatencyResult {
  p50Us: number;
  p99Us: number;
  samples: number;
  /** Length of the last packet the consumer kept (a check that the right bytes arrived). */
  lastPacketBytes: number;
}

const HEADER = 16;
/** Packets produced per event-loop turn at max rate. */
const MAX_RATE_BATCH = 64;
/** The consumer yields to its event loop after this many packets. */
const DRAIN_SLICE = 256;
const LATENCY_SAMPLES = 1 << 18;
const TRACK_ID = 7;

const role = (workerData as { role: 'producer' | 'consumer' }).role;
const port0 = parentPort!;
const now = () => performance.timeOrigin + performance.now();
const cpuUs = () => {
  const u = process.threadCpuUsage();
  return u.user + u.system;
};
// A worker_threads port, not a window: no target origin.
const reply = (msg: object) => port0.postMessage(msg, []);

// ---- producer ----

interface Producer {
  stop(): void;
  snap(): Snap;
}

function startProducer(s: Setup): Producer {
  const src = new Uint8Array(s.size);
  for (let i = 0; i < src.length; i++) src[i] = (i * 29) & 0xff;
  const counters = new Int32Array(s.counters);
  const rec = HEADER + s.size;
  const scratch = new Uint8Array(rec);
  const scratchView = new DataView(scratch.buffer);
  let offered = 0;
  let dropped = 0;
  let sent = 0;
  let stopped = false;
  const writer = s.variant.startsWith('ring')
    ? new RelayRingWriter(s.ring, s.variant !== 'ring-wait' ? { onWake: () => s.port.postMessage(0, []) } : {})
    : undefined;
  const full = (k: number) => sent + k - Atomics.load(counters, 0) > s.boundPackets;

  const header = (view: DataView, at: number, stamp: number) => {
    view.setUint32(at, s.size, true);
    view.setUint32(at + 4, TRACK_ID, true);
    view.setFloat64(at + 8, stamp, true);
  };

  /** `count` packets handled in one turn (as a UDP read of several datagrams would be). */
  const produce = (count: number) => {
    if (s.variant === 'batch') {
      let n = count;
      while (n > 0 && full(n)) {
        dropped++;
        n--;
      }
      offered += count;
      if (n === 0) return;
      const ab = new ArrayBuffer(n * rec);
      const u8 = new Uint8Array(ab);
      const view = new DataView(ab);
      for (let i = 0; i < n; i++) {
        src[0] = offered + i;
        header(view, i * rec, now());
        u8.set(src, i * rec + HEADER);
      }
      sent += n;
      s.port.postMessage(ab, [ab]);
      return;
    }
    for (let i = 0; i < count; i++) {
      offered++;
      src[0] = offered;
      const stamp = now();
      switch (s.variant) {
        case 'baseline':
          break;
        case 'clone':
          if (full(1)) {
            dropped++;
            break;
          }
          header(scratchView, 0, stamp);
          scratch.set(src, HEADER);
          sent++;
          s.port.postMessage(scratch, []);
          break;
        case 'transfer': {
          if (full(1)) {
            dropped++;
            break;
          }
          const ab = new ArrayBuffer(rec);
          header(new DataView(ab), 0, stamp);
          new Uint8Array(ab).set(src, HEADER);
          sent++;
          s.port.postMessage(ab, [ab]);
          break;
        }
        default:
          if (!writer!.write(TRACK_ID, stamp, src)) dropped++;
      }
    }
  };

  const t0 = performance.now();
  let timer: NodeJS.Timeout | undefined;
  const paced = () => {
    if (stopped) return;
    const due = Math.min(5000, Math.floor(((performance.now() - t0) * s.rate) / 1000) - offered);
    if (due > 0) produce(due);
    timer = setTimeout(paced, 1);
  };
  const flat = () => {
    if (stopped) return;
    produce(MAX_RATE_BATCH);
    setImmediate(flat);
  };
  if (s.rate > 0) paced();
  else flat();
  return {
    stop() {
      stopped = true;
      clearTimeout(timer);
      writer?.close();
    },
    snap: () => ({ cpuUs: cpuUs(), offered, dropped, received: 0 }),
  };
}

// ---- consumer ----

interface Consumer {
  snap(collect: boolean): Snap;
  latency(): LatencyResult;
  stop(): void;
}

function startConsumer(s: Setup): Consumer {
  const counters = new Int32Array(s.counters);
  const lat = new Float64Array(LATENCY_SAMPLES);
  let latN = 0;
  let collecting = false;
  let received = 0;
  let stopped = false;
  /** The last packet kept (so nothing is optimised away); the SFU would parse and cache it. */
  let kept: Uint8Array | undefined;
  const arrived = (stamp: number, bytes: Uint8Array) => {
    received++;
    kept = bytes;
    if (collecting) lat[latN++ & (LATENCY_SAMPLES - 1)] = (now() - stamp) * 1000;
  };
  const onRecords = (ab: ArrayBuffer, offset: number, length: number) => {
    const view = new DataView(ab, offset, length);
    let at = 0;
    while (at < length) {
      const len = view.getUint32(at, true);
      arrived(view.getFloat64(at + 8, true), new Uint8Array(ab, offset + at + HEADER, len));
      at += HEADER + len;
    }
    Atomics.store(counters, 0, received);
  };
  // The ring hands a view of shared memory: the consumer keeps its own copy, as it must to
  // parse the packet and cache it for NACKs (message candidates get owned bytes already).
  // `ring-view` reads in place (what forwarding straight from the ring, without caching, costs).
  const fromRing =
    s.variant === 'ring-view'
      ? (_track: number, stamp: number, payload: Uint8Array) => arrived(stamp, payload)
      : (_track: number, stamp: number, payload: Uint8Array) => arrived(stamp, Buffer.from(payload));

  if (s.variant === 'clone') {
    s.port.on('message', (m: Uint8Array) => onRecords(m.buffer as ArrayBuffer, m.byteOffset, m.byteLength));
  } else if (s.variant === 'transfer' || s.variant === 'batch') {
    s.port.on('message', (ab: ArrayBuffer) => onRecords(ab, 0, ab.byteLength));
  } else if (s.variant.startsWith('ring')) {
    const reader = new RelayRingReader(s.ring);
    const bell = s.variant !== 'ring-wait';
    let draining = false;
    const drain = () => {
      if (stopped) return;
      const n = reader.drain(fromRing, DRAIN_SLICE);
      if (n === DRAIN_SLICE) {
        setImmediate(drain);
        return;
      }
      if (!reader.armWake()) {
        setImmediate(drain);
        return;
      }
      draining = false;
      if (!bell) void reader.waitAsync().then(start);
    };
    const start = () => {
      if (draining) return;
      draining = true;
      drain();
    };
    if (bell) s.port.on('message', start);
    start();
  }
  return {
    snap(collect) {
      collecting = collect;
      if (collect) latN = 0;
      return { cpuUs: cpuUs(), offered: 0, dropped: 0, received };
    },
    latency() {
      const n = Math.min(latN, LATENCY_SAMPLES);
      const sorted = lat.subarray(0, n).toSorted();
      const at = (q: number) => (n ? Math.round(sorted[Math.min(n - 1, Math.floor(q * n))]! * 10) / 10 : 0);
      return { p50Us: at(0.5), p99Us: at(0.99), samples: n, lastPacketBytes: kept?.length ?? 0 };
    },
    stop() {
      stopped = true;
      s.port.close();
    },
  };
}

// ---- request loop ----

let producer: Producer | undefined;
let consumer: Consumer | undefined;
let pending: Setup | undefined;

port0.on('message', (msg: { type: string; collect?: boolean }) => {
  switch (msg.type) {
    case 'setup':
      pending = msg as unknown as Setup;
      if (role === 'consumer') consumer = startConsumer(pending);
      reply({ ok: true });
      break;
    case 'start':
      producer = startProducer(pending!);
      reply({ ok: true });
      break;
    case 'snap':
      reply(role === 'producer' ? producer!.snap() : consumer!.snap(msg.collect ?? false));
      break;
    case 'latency':
      reply(consumer!.latency());
      break;
    case 'teardown':
      producer?.stop();
      consumer?.stop();
      if (role === 'producer') pending?.port.close();
      producer = undefined;
      consumer = undefined;
      pending = undefined;
      reply({ ok: true });
      break;
    default:
      reply({ error: `unknown request ${msg.type}` });
  }
});
