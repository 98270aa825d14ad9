/**
 * Entry point of one media worker thread (started by pool.ts): the werift transports of the
 * participants placed here, their upstreams and downtracks, and this worker's end of the relay
 * rings. Everything arrives as `ToWorker` messages and leaves as `FromWorker` messages; the
 * session layer's objects never cross (docs/media-workers.md).
 *
 * Every `TICK_MS` it posts audio levels and the metric batch; every `STATS_EVERY` ticks the
 * cumulative stats that the main thread's proxies answer from. An error in a handler is logged
 * and the message dropped; an uncaught error ends the worker, and the main thread replaces it.
 */
import { parentPort, workerData } from 'node:worker_threads';
import { createLogger } from '../../../common/logger.ts';
import { systemClock } from '../../../common/clock.ts';
import type { DownTrack, MediaTransport } from '../../rtc/types.ts';
import { createWeriftTransportFactory } from '../transport.ts';
import { certificateOf, type WeriftTransportConfig } from '../peer-config.ts';
import { Upstream } from '../upstream.ts';
import { useSmallBufferPool } from '../../buffer-pool.ts';
import { createWorkerMetrics } from './metrics-bridge.ts';
import { WorkerRelays } from './worker-relays.ts';
import { STATS_EVERY, TICK_MS, type FromWorker, type ToWorker, type WorkerInit, type WorkerTick } from './protocol.ts';

const port = parentPort;
if (!port) throw new Error('sfu/media/workers/worker-main.ts runs only as a worker thread');
const init = workerData as WorkerInit;
const post = (msg: FromWorker, transfer?: Transferable[]) => port.postMessage(msg, transfer as never);

type Hooks = Pick<WeriftTransportConfig, 'tap' | 'dropOutgoing' | 'observePeerConnection'>;
const hooks: Hooks = init.hooks
  ? (((await import(init.hooks.module)) as { default: (data: unknown) => Hooks }).default(init.hooks.data) ?? {})
  : {};

useSmallBufferPool();
const log = createLogger({ name: 'sfu', level: init.logLevel as never }).child({ component: 'media', worker: init.index });
const metrics = createWorkerMetrics();
const factory = createWeriftTransportFactory({
  config: {
    portRange: init.portRange,
    nodeIp: init.nodeIp,
    certificate: certificateOf(init.dtls),
    metrics: {
      rtcp: metrics.rtcp,
      packets: metrics.packets,
      streams: metrics.streams,
      transport: metrics.transport,
      ...(init.timed ? { forwardLatency: metrics.forwardLatency } : {}),
    },
    ...hooks,
  },
  logger: log,
  clock: systemClock,
});

interface Hosted {
  transport: MediaTransport;
  /** mid → upstream id of what this participant publishes. */
  mids: Map<string, number>;
}

const transports = new Map<number, Hosted>();
const ups = new Map<number, { upstream: Upstream; tid: number }>();
const downs = new Map<number, { down: DownTrack; tid: number }>();
let nextUid = 1;

const relays = new WorkerRelays({
  log,
  now: () => systemClock.now(),
  tap: hooks.tap,
  onKeyframe: (relay, rid) => post({ t: 'keyframe', relay, rid }),
});

function create(tid: number, sid: string): void {
  const hosted: Hosted = { transport: undefined as unknown as MediaTransport, mids: new Map() };
  hosted.transport = factory({
    participantSid: sid,
    events: {
      onConnected: () => post({ t: 'connected', tid }),
      onFailed: (reason) => post({ t: 'failed', tid, reason }),
      onSignal: (msg) => post({ t: 'signal', tid, bytes: msg.toBinary() }),
      onIncomingMedia: (media) => {
        const upstream = media.source;
        if (!(upstream instanceof Upstream)) return;
        const uid = nextUid++;
        ups.set(uid, { upstream, tid });
        hosted.mids.set(media.mid, uid);
        const ext: Record<number, string> = {};
        for (let id = 1; id < 256; id++) {
          const uri = upstream.extensionUri(id);
          if (uri) ext[id] = uri;
        }
        post({
          t: 'media',
          tid,
          uid,
          mid: media.mid,
          kind: media.kind,
          msidTrackId: media.msidTrackId,
          mimeType: media.mimeType,
          clockRate: upstream.clockRate,
          ext,
        });
      },
      onMediaEnded: (mid) => {
        const uid = hosted.mids.get(mid);
        if (uid !== undefined) ups.delete(uid);
        hosted.mids.delete(mid);
        post({ t: 'mediaEnded', tid, mid });
      },
      onData: (kind, bytes) => post({ t: 'data', tid, kind, bytes }),
    },
  });
  transports.set(tid, hosted);
}

function closeTransport(tid: number): void {
  const hosted = transports.get(tid);
  if (!hosted) return;
  transports.delete(tid);
  hosted.transport.close();
  for (const uid of hosted.mids.values()) ups.delete(uid);
  for (const [did, d] of downs) if (d.tid === tid) downs.delete(did);
}

const done = (req: number) => () => post({ t: 'done', req });

function handle(msg: ToWorker): void {
  switch (msg.t) {
    case 'ping':
      post({ t: 'pong', n: msg.n });
      return;
    case 'peer':
      relays.addPeer(msg.rings);
      return;
    case 'peerGone':
      relays.removePeer(msg.peer);
      return;
    case 'create':
      create(msg.tid, msg.sid);
      return;
    case 'start':
      transports.get(msg.tid)?.transport.start();
      return;
    case 'offer':
    case 'answer': {
      const t = transports.get(msg.tid)?.transport;
      if (!t) return done(msg.req)();
      const run = msg.t === 'offer' ? t.handleOffer(msg.sdp, msg.id) : t.handleAnswer(msg.sdp, msg.id);
      void run.finally(done(msg.req));
      return;
    }
    case 'candidate': {
      const t = transports.get(msg.tid)?.transport;
      if (!t) return done(msg.req)();
      void t.addCandidate(msg.target, msg.init).finally(done(msg.req));
      return;
    }
    case 'subscribe': {
      const t = transports.get(msg.tid)?.transport;
      const upstream = msg.uid !== undefined ? ups.get(msg.uid)?.upstream : msg.relay !== undefined ? relays.copy(msg.relay) : undefined;
      if (!t || !upstream || upstream.isClosed) return;
      downs.set(msg.did, { down: t.subscribe(upstream, msg.streamId, msg.trackId), tid: msg.tid });
      return;
    }
    case 'down': {
      const d = downs.get(msg.did);
      if (!d) return;
      if (msg.op === 'enabled') d.down.setEnabled(msg.value === true);
      else if (msg.op === 'quality') d.down.setMaxQuality(Number(msg.value));
      else {
        downs.delete(msg.did);
        d.down.close();
      }
      return;
    }
    case 'data':
      transports.get(msg.tid)?.transport.sendData(msg.kind, msg.bytes);
      return;
    case 'close':
      closeTransport(msg.tid);
      return;
    case 'upstream': {
      const u = ups.get(msg.uid);
      if (!u) return;
      if (msg.op === 'keyframe') u.upstream.requestKeyframe(msg.rid);
      else {
        ups.delete(msg.uid);
        u.upstream.close();
      }
      return;
    }
    case 'relayOut': {
      const u = ups.get(msg.uid);
      if (u) relays.openOut(u.upstream, msg.relay, msg.to);
      return;
    }
    case 'relayOutEnd':
      relays.closeOut(msg.relay);
      return;
    case 'relayIn':
      relays.openIn(msg.relay, msg.from, msg.kind, msg.mimeType, msg.clockRate, msg.ext);
      return;
    case 'relayInEnd':
      relays.closeIn(msg.relay);
      return;
  }
}

// As on the main thread (common/process.ts): a stray rejection is logged and the worker goes on;
// an uncaught exception ends it, and the pool replaces it.
process.on('unhandledRejection', (reason) => log.error({ err: reason }, 'media worker: unhandled promise rejection; kept running'));

port.on('message', (msg: ToWorker) => {
  try {
    handle(msg);
  } catch (err) {
    log.error({ err, message: msg.t }, 'media worker: message failed');
  }
});

let ticks = 0;
setInterval(() => {
  ticks++;
  const audio: WorkerTick['audio'] = [];
  for (const [uid, { upstream }] of ups) {
    if (upstream.kind !== 'audio') continue;
    const c = upstream.takeAudioCounts();
    if (c.packets > 0) audio.push([uid, c.packets, c.active, c.sum]);
  }
  // Admission every tick: the main thread refuses joins (503) from it, so it must be fresh.
  const tick: WorkerTick = { t: 'tick', audio, metrics: metrics.take(), admit: factory.canAdmit?.() ?? true };
  if (ticks % STATS_EVERY === 0) {
    tick.stats = {
      ups: Array.from(ups, ([uid, { upstream }]) => [uid, upstream.uplinkStats()]),
      downs: Array.from(downs, ([did, { down }]) => [did, down.stats(), down.link()]),
      ports: metrics.ports(),
      cpu: process.threadCpuUsage(),
      participants: transports.size,
      relay: relays.stats(),
    };
  }
  post(tick);
}, TICK_MS);

post({ t: 'ready' });
