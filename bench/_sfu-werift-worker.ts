/**
 * Child process of the SFU benchmark running werift peers (bench/_sfu-werift-client.ts), for
 * what rtc-node cannot measure. Requests over IPC (each reply echoes the request `id`):
 * - `baseline {durationMs}`: two werift PCs in this process, publisher → subscriber directly on
 *   loopback, stamped audio every 20 ms: the network + werift send/receive time without an SFU;
 * - `latencyStart {wsUrl, room}`: a stamped publisher and a subscriber through the SFU;
 * - `latencyCollect {durationMs}`: per-packet age at the subscriber over a window;
 * - `videoSubs {wsUrl, room, sizes}`: werift subscribers asking for given video sizes;
 * - `videoStats`: packets/bytes each of those received, by requested size;
 * - `join {wsUrl, room, identities}` / `stats`: plain audio subscribers counting RTP, the same
 *   interface as the rtc-node worker's (for fan-out beyond what rtc-node clients can carry);
 * - `close`: closes every peer and exits.
 */
import { RTCPeerConnection, MediaStream } from 'werift';
import { mintToken, percentile, round } from './_sfu-procs.ts';
import { waitFor } from '../test/support/wait.ts';
import { serveParent } from './_sfu-worker-ipc.ts';
import {
  WeriftLkClient,
  startStampedAudio,
  stampAge,
  waitConnected,
  waitGathered,
  weriftPeerConfig,
} from './_sfu-werift-client.ts';

interface Request {
  id: number;
  type: 'baseline' | 'latencyStart' | 'latencyCollect' | 'videoSubs' | 'videoStats' | 'join' | 'stats' | 'close';
  identities?: string[];
  concurrency?: number;
  wsUrl?: string;
  room?: string;
  durationMs?: number;
  portRange?: [number, number];
  sizes?: { label: string; width: number; height: number }[];
}

const clients: WeriftLkClient[] = [];
const stoppers: (() => void)[] = [];
let ages: number[] | undefined;
let stampedReceived = 0;
const fanout = { packets: 0, bytes: 0, rooms: 0, streams: new Set<string>() };
const video: { label: string; packets: number; bytes: number; tracks: Set<string> }[] = [];

function summarise(xs: number[]) {
  return { samples: xs.length, p50Ms: round(percentile(xs, 50), 3), p99Ms: round(percentile(xs, 99), 3), maxMs: round(Math.max(...xs), 3) };
}

async function collect(durationMs: number): Promise<number[]> {
  ages = [];
  await new Promise((r) => setTimeout(r, durationMs));
  const out = ages;
  ages = undefined;
  return out;
}

async function baseline(req: Request): Promise<Record<string, unknown>> {
  const a = new RTCPeerConnection(weriftPeerConfig(req.portRange!));
  const b = new RTCPeerConnection(weriftPeerConfig(req.portRange!));
  try {
    b.onRemoteTransceiverAdded.subscribe((t) => {
      t.onTrack.subscribe((track) => {
        track.onReceiveRtp.subscribe((rtp) => {
          const age = stampAge(rtp.payload);
          if (age !== undefined && ages) ages.push(age);
        });
      });
    });
    const transceiver = a.addTransceiver('audio', { direction: 'sendonly', streams: [new MediaStream({ id: 'baseline' })] });
    await a.setLocalDescription(await a.createOffer());
    await waitGathered(a);
    await b.setRemoteDescription(a.localDescription!);
    await b.setLocalDescription(await b.createAnswer());
    await waitGathered(b);
    await a.setRemoteDescription(b.localDescription!);
    await Promise.all([waitConnected(a, 'baseline sender'), waitConnected(b, 'baseline receiver')]);
    const stop = startStampedAudio(transceiver);
    try {
      await collect(1000); // warm-up
      return summarise(await collect(req.durationMs ?? 5000));
    } finally {
      stop();
    }
  } finally {
    await Promise.race([Promise.all([a.close(), b.close()]), new Promise((r) => setTimeout(r, 3000))]).catch(() => undefined);
  }
}

async function latencyStart(req: Request): Promise<Record<string, unknown>> {
  const sub = await WeriftLkClient.connect(req.wsUrl!, await mintToken('latency-sub', req.room!), {
    portRange: req.portRange!,
    onRtp: (rtp) => {
      const age = stampAge(rtp.payload);
      if (age === undefined) return;
      stampedReceived++;
      if (ages) ages.push(age);
    },
  });
  clients.push(sub);
  const pub = await WeriftLkClient.connect(req.wsUrl!, await mintToken('latency-pub', req.room!), { portRange: req.portRange! });
  clients.push(pub);
  const transceiver = await pub.publishAudio();
  stoppers.push(startStampedAudio(transceiver));
  await waitFor('a stamped packet through the SFU', () => stampedReceived > 0, { timeoutMs: 15_000, intervalMs: 50 });
  return {};
}

async function videoSubs(req: Request): Promise<Record<string, unknown>> {
  let n = 0;
  for (const size of req.sizes ?? []) {
    const entry = { label: size.label, packets: 0, bytes: 0, tracks: new Set<string>() };
    video.push(entry);
    const client = await WeriftLkClient.connect(req.wsUrl!, await mintToken(`video-${size.label}-${n++}`, req.room!), {
      portRange: req.portRange!,
      videoSize: { width: size.width, height: size.height },
      onRtp: (rtp, kind, streamId) => {
        if (kind !== 'video') return;
        entry.packets++;
        entry.bytes += rtp.payload.length;
        entry.tracks.add(streamId);
      },
    });
    clients.push(client);
  }
  return {};
}

async function joinSubscribers(req: Request): Promise<Record<string, unknown>> {
  const identities = req.identities ?? [];
  const joinMs: number[] = [];
  let next = 0;
  const one = async (identity: string) => {
    const t0 = performance.now();
    const client = await WeriftLkClient.connect(req.wsUrl!, await mintToken(identity, req.room!), {
      portRange: req.portRange!,
      onRtp: (rtp, _kind, streamId) => {
        fanout.packets++;
        fanout.bytes += rtp.serializeSize;
        if (!fanout.streams.has(`${identity}/${streamId}`)) fanout.streams.add(`${identity}/${streamId}`);
      },
    });
    clients.push(client);
    fanout.rooms++;
    joinMs.push(performance.now() - t0);
  };
  await Promise.all(
    Array.from({ length: Math.min(Math.max(1, req.concurrency ?? 3), identities.length) }, async () => {
      while (next < identities.length) await one(identities[next++]!);
    }),
  );
  return { joinMs };
}

function videoStats(): Record<string, unknown> {
  return { subscribers: video.map((v) => ({ label: v.label, packets: v.packets, bytes: v.bytes, tracks: v.tracks.size })) };
}

async function closeAll(): Promise<void> {
  for (const s of stoppers) s();
  await Promise.all(clients.map((c) => c.close()));
}

serveParent<Request>(async (raw): Promise<Record<string, unknown>> => {
  switch (raw.type) {
    case 'baseline':
      return await baseline(raw);
    case 'latencyStart':
      return await latencyStart(raw);
    case 'latencyCollect':
      return summarise(await collect(raw.durationMs ?? 5000));
    case 'videoSubs':
      return await videoSubs(raw);
    case 'videoStats':
      return videoStats();
    case 'join':
      return await joinSubscribers(raw);
    case 'stats':
      return {
        inPackets: fanout.packets,
        inBytes: fanout.bytes,
        outPackets: 0,
        inStreams: fanout.streams.size,
        framesDecoded: 0,
        rooms: fanout.rooms,
      };
    case 'close':
      await closeAll();
      return {};
  }
}, closeAll);
