/**
 * The media workers of one SFU process (`workers: N ≥ 2`; docs/media-workers.md), seen from the
 * main thread: it starts them, gives each its slice of `rtc.port_range_*` and a relay ring to
 * every other worker, places each joining participant on one (`worker_placement`), and is the
 * `MediaTransportFactory` the room manager uses. It decides the relays: the first subscriber on
 * worker B of a track published on worker A opens one relay A→B, the last one closes it; every
 * later subscriber on B shares it.
 *
 * Faults: a worker that exits, throws or misses pongs for `PING_TIMEOUT_MS` is replaced. Its
 * participants' transports fail (`onFailed`: the session layer sends them a leave with
 * RECONNECT), the relays to and from it are closed on the other workers, and a new worker with
 * fresh rings takes its slot and port slice. Other workers never wait on it: rings are bounded
 * and control messages are few.
 */
import { MessageChannel, Worker } from 'node:worker_threads';
import { Gauge, type Registry } from 'prom-client';
import { SignalResponse } from '@livekit/protocol';
import type { Logger } from '../../../common/logger.ts';
import type { SfuMetrics } from '../../metrics.ts';
import type { MediaTransportFactory, MediaTransportOptions } from '../../rtc/types.ts';
import { createRelayRing } from '../relay-ring.ts';
import { dtlsKeysOfProcess, type DtlsKeys } from '../peer-config.ts';
import { applyMetricBatch } from './metrics-bridge.ts';
import { RemoteDownTrack, RemoteUpstream, WorkerTransport, type WorkerLink } from './proxies.ts';
import { RING_BYTES, type FromWorker, type ToWorker, type WorkerInit, type WorkerTick } from './protocol.ts';

const PING_MS = 1000;
export const PING_TIMEOUT_MS = 5000;
/** A worker not ready this long after it was started is ended (and retried). */
export const START_TIMEOUT_MS = 30_000;
/** `pack`: how many more participants the room's worker may hold than the least-loaded one. */
export const PACK_SLACK = 32;
const WORKER_URL = new URL('./worker-main.ts', import.meta.url);

export type WorkerPlacement = 'pack' | 'spread';

export interface MediaWorkerPoolDeps {
  count: number;
  placement: WorkerPlacement;
  portRange: [number, number];
  nodeIp: string;
  logger: Logger;
  metrics: SfuMetrics;
  registry: Registry;
  /** Time a sample of packets (livekit_forward_latency_seconds). */
  timed: boolean;
  /** Test hooks loaded by every worker (WorkerInit.hooks). */
  hooks?: WorkerInit['hooks'];
}

export interface MediaWorkerInfo {
  index: number;
  threadId: number;
  participants: number;
  restarts: number;
}

export interface MediaWorkerPool {
  readonly factory: MediaTransportFactory;
  /** Resolves when every worker has started. */
  ready(): Promise<void>;
  workers(): MediaWorkerInfo[];
  /** The worker holding a participant's media (tests, diagnostics). */
  workerOf(participantSid: string): number | undefined;
  /** Ends one worker as a crash would (tests, diagnostics): it is replaced. */
  terminate(index: number): Promise<void>;
  stop(): Promise<void>;
}

interface Relay {
  relay: number;
  upstream: RemoteUpstream;
  to: Slot;
}

/** One worker thread's lifetime in a slot; a replacement is a new Slot in the same index. */
class Slot implements WorkerLink {
  readonly worker: Worker;
  alive = true;
  started = false;
  readonly transports = new Map<number, WorkerTransport>();
  readonly sids = new Map<string, WorkerTransport>();
  readonly ups = new Map<number, RemoteUpstream>();
  readonly downs = new Map<number, RemoteDownTrack>();
  readonly rooms = new Map<string, number>();
  private readonly pending = new Map<number, () => void>();
  private nextReq = 1;
  lastPong: number;
  pingN = 0;
  admit = true;
  ports = { inUse: 0, capacity: 0 };
  cpuSeconds = 0;
  relayStats = { written: 0, read: 0, drops: 0, unknown: 0 };
  packets = { incoming: 0, outgoing: 0 };
  readonly readyP: Promise<void>;
  private resolveReady!: () => void;

  readonly index: number;
  readonly pool: Pool;

  constructor(index: number, pool: Pool, init: WorkerInit) {
    this.index = index;
    this.pool = pool;
    this.readyP = new Promise((resolve) => (this.resolveReady = resolve));
    this.worker = new Worker(WORKER_URL, { workerData: init, name: `media-${index}` });
    this.lastPong = Date.now();
  }

  markReady(): void {
    this.started = true;
    this.resolveReady();
  }

  post(msg: ToWorker, transfer?: Transferable[]): void {
    if (this.alive) this.worker.postMessage(msg, transfer as never);
  }

  request(make: (req: number) => ToWorker): Promise<void> {
    if (!this.alive) return Promise.resolve();
    const req = this.nextReq++;
    return new Promise((resolve) => {
      this.pending.set(req, resolve);
      this.post(make(req));
    });
  }

  done(req: number): void {
    const resolve = this.pending.get(req);
    this.pending.delete(req);
    resolve?.();
  }

  /** Dead: every waiting request is answered (the transports fail right after). */
  settle(): void {
    this.alive = false;
    for (const resolve of this.pending.values()) resolve();
    this.pending.clear();
    this.resolveReady();
  }

  subscribe(transport: WorkerTransport, upstream: RemoteUpstream, down: RemoteDownTrack, streamId: string, trackId: string): void {
    this.pool.subscribe(this, transport, upstream, down, streamId, trackId);
  }

  closeDown(down: RemoteDownTrack): void {
    this.pool.closeDown(this, down, true);
  }

  closeUpstream(upstream: RemoteUpstream): void {
    this.pool.closeUpstream(upstream);
  }

  forget(transport: WorkerTransport): void {
    this.pool.forget(this, transport);
  }
}

class Pool implements MediaWorkerPool {
  readonly factory: MediaTransportFactory;
  private readonly slots: Slot[] = [];
  private readonly slices: [number, number][];
  private readonly relays = new Map<number, Relay>();
  private readonly restarts: number[];
  /** Per slot: consecutive workers that died before they were ready. */
  private readonly failedStarts: number[] = [];
  private readonly respawning = new Map<number, NodeJS.Timeout>();
  private nextTid = 1;
  private nextRelay = 1;
  private stopped = false;
  /** Set before the first worker starts; every worker (replacements too) gets the same one. */
  private dtls!: DtlsKeys;
  private readonly started: Promise<void>;
  private readonly pinger: NodeJS.Timeout;
  private readonly log: Logger;
  private readonly unregister: () => void;

  private readonly deps: MediaWorkerPoolDeps;

  constructor(deps: MediaWorkerPoolDeps) {
    this.deps = deps;
    this.log = deps.logger;
    this.slices = slicePorts(deps.portRange, deps.count);
    this.restarts = Array.from({ length: deps.count }, () => 0);
    // The certificate is made here, on the main thread, before any worker starts (why: peer-config.ts).
    this.started = dtlsKeysOfProcess().then((keys) => {
      this.dtls = keys;
      if (!this.stopped) for (let i = 0; i < deps.count; i++) this.slots.push(this.spawn(i));
    });
    const factory: MediaTransportFactory = (opts) => this.create(opts);
    factory.canAdmit = () => this.slots.some((s) => s.alive && s.admit);
    this.factory = factory;
    this.pinger = setInterval(() => this.ping(), PING_MS);
    this.pinger.unref();
    this.unregister = this.registerMetrics();
    this.log.info({ workers: deps.count, placement: deps.placement }, 'media workers started');
  }

  private spawn(index: number): Slot {
    const init: WorkerInit = {
      index,
      portRange: this.slices[index]!,
      nodeIp: this.deps.nodeIp,
      logLevel: this.deps.logger.level,
      timed: this.deps.timed,
      dtls: this.dtls,
      ...(this.deps.hooks ? { hooks: this.deps.hooks } : {}),
    };
    const slot = new Slot(index, this, init);
    slot.worker.on('message', (msg: FromWorker) => {
      try {
        this.onMessage(slot, msg);
      } catch (err) {
        this.log.error({ err, worker: index, message: msg.t }, 'media worker message failed');
      }
    });
    slot.worker.on('error', (err) => {
      this.log.error({ err, worker: index }, 'media worker failed');
      void slot.worker.terminate();
    });
    slot.worker.on('exit', (code) => this.onExit(slot, code));
    // Rings to every live worker; postMessage before the worker is up is queued by Node.
    for (const other of this.slots) if (other && other !== slot && other.alive) this.connect(slot, other);
    return slot;
  }

  private connect(a: Slot, b: Slot): void {
    const ab = createRelayRing(RING_BYTES);
    const ba = createRelayRing(RING_BYTES);
    const { port1, port2 } = new MessageChannel();
    a.post({ t: 'peer', rings: { peer: b.index, out: ab, in: ba, port: port1 } }, [port1]);
    b.post({ t: 'peer', rings: { peer: a.index, out: ba, in: ab, port: port2 } }, [port2]);
  }

  async ready(): Promise<void> {
    await this.started;
    await Promise.all(this.slots.map((s) => s.readyP));
  }

  workers(): MediaWorkerInfo[] {
    return this.slots.map((s) => ({ index: s.index, threadId: s.worker.threadId, participants: s.transports.size, restarts: this.restarts[s.index]! }));
  }

  workerOf(sid: string): number | undefined {
    for (const s of this.slots) if (s.sids.has(sid)) return s.index;
    return undefined;
  }

  async terminate(index: number): Promise<void> {
    const slot = this.slots[index];
    if (slot?.alive) await slot.worker.terminate();
  }

  /** The worker for a join (docs/media-workers.md, placement). */
  private place(room: string): Slot | undefined {
    const live = this.slots.filter((s) => s.alive && s.admit);
    if (live.length === 0) return undefined;
    let least = live[0]!;
    for (const s of live) if (s.transports.size < least.transports.size) least = s;
    if (this.deps.placement === 'spread' || !room) return least;
    let home: Slot | undefined;
    for (const s of live) if ((s.rooms.get(room) ?? 0) > (home?.rooms.get(room) ?? 0)) home = s;
    return home && home.transports.size <= least.transports.size + PACK_SLACK ? home : least;
  }

  private create(opts: MediaTransportOptions): WorkerTransport {
    const room = opts.room ?? '';
    const slot = this.place(room) ?? this.slots[0];
    if (!slot) throw new Error('media workers are not started yet (await ready())');
    const tid = this.nextTid++;
    const transport = new WorkerTransport(slot, tid, room, opts.events);
    slot.transports.set(tid, transport);
    slot.sids.set(opts.participantSid, transport);
    slot.rooms.set(room, (slot.rooms.get(room) ?? 0) + 1);
    slot.post({ t: 'create', tid, sid: opts.participantSid });
    if (!slot.alive) queueMicrotask(() => transport.events.onFailed('media worker exited'));
    return transport;
  }

  forget(slot: Slot, transport: WorkerTransport): void {
    if (!slot.transports.delete(transport.tid)) return;
    for (const [sid, t] of slot.sids) if (t === transport) slot.sids.delete(sid);
    const left = (slot.rooms.get(transport.room) ?? 1) - 1;
    if (left > 0) slot.rooms.set(transport.room, left);
    else slot.rooms.delete(transport.room);
    // The worker closed the transport's downtracks with it: only the bookkeeping is left.
    for (const down of Array.from(transport.downs)) {
      down.closed = true;
      this.closeDown(slot, down, false);
    }
    transport.downs.clear();
  }

  subscribe(slot: Slot, transport: WorkerTransport, upstream: RemoteUpstream, down: RemoteDownTrack, streamId: string, trackId: string): void {
    const source = upstream.link as Slot;
    if (upstream.closed || !source.alive || !slot.alive) {
      // An inert downtrack: its track or a worker is gone, the session layer closes it soon.
      down.closed = true;
      transport.downs.delete(down);
      return;
    }
    slot.downs.set(down.did, down);
    upstream.downs++;
    if (source === slot) {
      slot.post({ t: 'subscribe', tid: transport.tid, did: down.did, uid: upstream.uid, streamId, trackId });
      return;
    }
    let r = upstream.relays.get(slot.index);
    if (!r) {
      r = { relay: this.nextRelay++, refs: 0 };
      upstream.relays.set(slot.index, r);
      this.relays.set(r.relay, { relay: r.relay, upstream, to: slot });
      // The copy first: packets that reach the destination before it opened are not forwarded.
      slot.post({
        t: 'relayIn',
        relay: r.relay,
        from: source.index,
        kind: upstream.kind,
        mimeType: upstream.mimeType,
        clockRate: upstream.clockRate,
        ext: upstream.ext,
      });
      source.post({ t: 'relayOut', uid: upstream.uid, relay: r.relay, to: slot.index });
    }
    r.refs++;
    down.relay = r.relay;
    slot.post({ t: 'subscribe', tid: transport.tid, did: down.did, relay: r.relay, streamId, trackId });
  }

  closeDown(slot: Slot, down: RemoteDownTrack, tell: boolean): void {
    if (!slot.downs.delete(down.did)) return;
    slot.transports.get(down.tid)?.downs.delete(down);
    if (tell) slot.post({ t: 'down', did: down.did, op: 'close' });
    const upstream = down.upstream;
    upstream.downs = Math.max(0, upstream.downs - 1);
    if (down.relay === undefined) return;
    const r = upstream.relays.get(slot.index);
    if (!r || r.relay !== down.relay || --r.refs > 0) return;
    this.endRelay(r.relay);
  }

  private endRelay(relay: number): void {
    const r = this.relays.get(relay);
    if (!r) return;
    this.relays.delete(relay);
    r.upstream.relays.delete(r.to.index);
    (r.upstream.link as Slot).post({ t: 'relayOutEnd', relay });
    r.to.post({ t: 'relayInEnd', relay });
  }

  closeUpstream(upstream: RemoteUpstream): void {
    const source = upstream.link as Slot;
    source.ups.delete(upstream.uid);
    for (const { relay } of Array.from(upstream.relays.values())) this.endRelay(relay);
    source.post({ t: 'upstream', uid: upstream.uid, op: 'close' });
  }

  private onMessage(slot: Slot, msg: FromWorker): void {
    switch (msg.t) {
      case 'ready':
        slot.markReady();
        return;
      case 'pong':
        slot.lastPong = Date.now();
        return;
      case 'done':
        slot.done(msg.req);
        return;
      case 'tick':
        this.onTick(slot, msg);
        return;
      case 'keyframe': {
        const r = this.relays.get(msg.relay);
        if (r) (r.upstream.link as Slot).post({ t: 'upstream', uid: r.upstream.uid, op: 'keyframe', rid: msg.rid });
        return;
      }
    }
    const transport = slot.transports.get(msg.tid);
    if (!transport || transport.closed) return;
    const events = transport.events;
    switch (msg.t) {
      case 'signal':
        events.onSignal(SignalResponse.fromBinary(msg.bytes));
        return;
      case 'connected':
        events.onConnected();
        return;
      case 'failed':
        events.onFailed(msg.reason);
        return;
      case 'media': {
        const upstream = new RemoteUpstream(slot, msg.uid, msg.kind, msg.mimeType, msg.clockRate, msg.ext);
        slot.ups.set(msg.uid, upstream);
        events.onIncomingMedia({ mid: msg.mid, kind: msg.kind, msidTrackId: msg.msidTrackId, mimeType: msg.mimeType, source: upstream });
        return;
      }
      case 'mediaEnded':
        events.onMediaEnded(msg.mid);
        return;
      case 'data':
        events.onData(msg.kind, msg.bytes);
        return;
    }
  }

  private onTick(slot: Slot, tick: WorkerTick): void {
    applyMetricBatch(this.deps.metrics, tick.metrics);
    slot.packets.incoming += tick.metrics.packets[0]! + tick.metrics.packets[1]!;
    slot.packets.outgoing += tick.metrics.packets[2]! + tick.metrics.packets[3]!;
    for (const [uid, packets, active, sum] of tick.audio) slot.ups.get(uid)?.addAudio(packets, active, sum);
    slot.admit = tick.admit;
    const stats = tick.stats;
    if (!stats) return;
    for (const [uid, uplink] of stats.ups) slot.ups.get(uid)?.setUplink(uplink);
    for (const [did, s, link] of stats.downs) slot.downs.get(did)?.setStats(s, link);
    slot.ports = stats.ports;
    slot.cpuSeconds = (stats.cpu.user + stats.cpu.system) / 1e6;
    slot.relayStats = stats.relay;
  }

  private ping(): void {
    const now = Date.now();
    for (const slot of this.slots) {
      if (!slot.alive) continue;
      if (!slot.started) {
        // lastPong is the spawn time until the first pong.
        if (now - slot.lastPong > START_TIMEOUT_MS) {
          this.log.error({ worker: slot.index }, `media worker did not start within ${START_TIMEOUT_MS / 1000} s: replacing it`);
          void slot.worker.terminate();
        }
        continue;
      }
      if (now - slot.lastPong > PING_TIMEOUT_MS) {
        this.log.error({ worker: slot.index, silentMs: now - slot.lastPong }, 'media worker stopped answering: replacing it');
        void slot.worker.terminate();
        continue;
      }
      slot.post({ t: 'ping', n: ++slot.pingN });
    }
  }

  private onExit(slot: Slot, code: number): void {
    if (!slot.alive) return;
    slot.settle();
    if (this.stopped) return;
    const index = slot.index;
    this.restarts[index]!++;
    this.log.error({ worker: index, code, participants: slot.transports.size }, 'media worker exited: its participants reconnect, a new worker takes its place');
    // Relays to or from the dead worker end on the other side.
    for (const r of Array.from(this.relays.values())) {
      const source = r.upstream.link as Slot;
      if (source === slot || r.to === slot) this.endRelay(r.relay);
    }
    for (const other of this.slots) if (other !== slot && other.alive) other.post({ t: 'peerGone', peer: index });
    // A worker that died before it was ready (a start-up error) is retried with a backoff
    // (1 s doubling to 60 s), not in a tight loop; one that served is replaced at once.
    const tries = slot.started ? 0 : (this.failedStarts[index] ?? 0) + 1;
    this.failedStarts[index] = tries;
    const respawn = () => {
      this.respawning.delete(index);
      if (!this.stopped) this.slots[index] = this.spawn(index);
    };
    if (tries === 0) respawn();
    else {
      const delay = Math.min(60_000, 1000 * 2 ** (tries - 1));
      this.log.error({ worker: index, tries, retryInMs: delay }, 'media worker failed to start');
      const timer = setTimeout(respawn, delay);
      timer.unref();
      this.respawning.set(index, timer);
    }
    for (const transport of Array.from(slot.transports.values())) {
      if (!transport.closed) transport.events.onFailed('media worker exited');
    }
  }

  private registerMetrics(): () => void {
    const registers = [this.deps.registry];
    const labelNames = ['worker'] as const;
    const perWorker = (name: string, help: string, read: (s: Slot) => number, extra?: string) => {
      const g = new Gauge({
        name,
        help,
        labelNames: extra ? ['worker', extra] : labelNames,
        registers,
        collect: () => {
          g.reset();
          for (const s of this.slots) g.set({ worker: String(s.index) }, read(s));
        },
      });
      return g;
    };
    const gauges = [
      perWorker('matrixrtc_sfu_worker_cpu_seconds', 'CPU time of each media worker thread, seconds (since it started)', (s) => s.cpuSeconds),
      perWorker('matrixrtc_sfu_worker_participants', 'Participants whose media each worker holds', (s) => s.transports.size),
      perWorker('matrixrtc_sfu_worker_packets_in', 'RTP packets received by each worker', (s) => s.packets.incoming),
      perWorker('matrixrtc_sfu_worker_packets_out', 'RTP packets sent by each worker', (s) => s.packets.outgoing),
      perWorker('matrixrtc_sfu_worker_relay_written', 'Packets each worker copied into relay rings to other workers', (s) => s.relayStats.written),
      perWorker('matrixrtc_sfu_worker_relay_read', 'Packets each worker read from relay rings of other workers', (s) => s.relayStats.read),
      perWorker('matrixrtc_sfu_worker_relay_drops', 'Packets each worker dropped because its relay ring to another worker was full', (s) => s.relayStats.drops),
      perWorker(
        'matrixrtc_sfu_worker_relay_unmatched',
        'Relayed packets a worker read for a track copy it had not opened yet or had closed already (start and end of a relay)',
        (s) => s.relayStats.unknown,
      ),
      perWorker('matrixrtc_sfu_worker_restarts', 'Times each worker slot was replaced after its worker died', (s) => this.restarts[s.index]!),
    ];
    const unports = this.deps.metrics.transport.ports(() => {
      let inUse = 0;
      let capacity = 0;
      for (const s of this.slots) {
        inUse += s.ports.inUse;
        capacity += s.ports.capacity;
      }
      return { inUse, capacity };
    });
    return () => {
      unports();
      for (const g of gauges) this.deps.registry.removeSingleMetric((g as unknown as { name: string }).name);
    };
  }

  async stop(): Promise<void> {
    if (this.stopped) return;
    this.stopped = true;
    clearInterval(this.pinger);
    for (const timer of this.respawning.values()) clearTimeout(timer);
    this.respawning.clear();
    this.unregister();
    await this.started.catch(() => undefined);
    await Promise.all(this.slots.map((s) => s.worker.terminate()));
  }
}

/** `count` contiguous slices of the inclusive range `[start, end]`. */
export function slicePorts(range: [number, number], count: number): [number, number][] {
  const [start, end] = range;
  const size = Math.floor((end - start + 1) / count);
  if (size < 2) {
    throw new RangeError(`rtc.port_range_start..port_range_end (${start}-${end}) is too small for ${count} media workers (at least 2 ports each)`);
  }
  return Array.from({ length: count }, (_, i) => [start + i * size, i === count - 1 ? end : start + (i + 1) * size - 1]);
}

export function createMediaWorkerPool(deps: MediaWorkerPoolDeps): MediaWorkerPool {
  return new Pool(deps);
}
