/**
 * Child process of the SFU benchmark hosting @livekit/rtc-node participants, so their CPU is
 * not the SFU's. Driven over the IPC channel by bench/sfu.ts (`ask` in _sfu-procs.ts); every
 * request carries an `id` echoed in the reply. Requests:
 * - `join`: connects participants to a room, optionally publishing a tone (20 ms Opus frames)
 *   or a simulcast VP8 camera fed with moving synthetic frames;
 * - `stats`: RTP packets/bytes received and sent, summed over all its rooms (libwebrtc stats);
 * - `joinProbe`: one fresh participant, token minting to first decoded remote audio frame;
 * - `close`: disconnects everyone and exits.
 * Nothing here waits without a bound.
 */
import {
  AudioStream,
  LocalVideoTrack,
  Room,
  RoomEvent,
  TrackKind,
  TrackPublishOptions,
  TrackSource,
  VideoBufferType,
  VideoFrame,
  VideoSource,
  type RemoteTrack,
} from '@livekit/rtc-node';
import { connectRtcNode, type RtcNodeClient } from '../test/support/rtc-node.ts';
import { serveParent } from './_sfu-worker-ipc.ts';
import { mintToken } from './_sfu-procs.ts';

interface Request {
  id: number;
  type: 'join' | 'stats' | 'joinProbe' | 'close';
  wsUrl?: string;
  room?: string;
  identities?: string[];
  publish?: 'audio' | 'video' | 'none';
  concurrency?: number;
  video?: { width: number; height: number; fps: number; maxBitrate: number };
}

const clients: RtcNodeClient[] = [];
const videoLoops: { stop(): void }[] = [];

/** A few precomputed I420 frames with moving blocks, so the encoder has real work to do. */
function makeFrames(width: number, height: number, count: number): Uint8Array[] {
  const frames: Uint8Array[] = [];
  const ySize = width * height;
  const cSize = (width / 2) * (height / 2);
  let seed = 12345;
  const rand = () => {
    seed = (seed * 1103515245 + 12345) & 0x7fffffff;
    return seed / 0x7fffffff;
  };
  for (let f = 0; f < count; f++) {
    const buf = new Uint8Array(ySize + 2 * cSize);
    for (let y = 0; y < height; y++) {
      for (let x = 0; x < width; x++) buf[y * width + x] = (x + y + f * 8) & 0xff;
    }
    // Random 16×16 blocks change every frame (keeps the bitrate at the encoder's cap).
    for (let b = 0; b < 40; b++) {
      const bx = Math.floor(rand() * (width / 16)) * 16;
      const by = Math.floor(rand() * (height / 16)) * 16;
      const v = Math.floor(rand() * 255);
      for (let y = by; y < Math.min(height, by + 16); y++) buf.fill(v, y * width + bx, y * width + Math.min(width, bx + 16));
    }
    buf.fill(128, ySize);
    frames.push(buf);
  }
  return frames;
}

async function publishVideo(room: Room, v: NonNullable<Request['video']>): Promise<void> {
  const source = new VideoSource(v.width, v.height);
  const track = LocalVideoTrack.createVideoTrack('camera', source);
  const options = new TrackPublishOptions({
    source: TrackSource.SOURCE_CAMERA,
    simulcast: true,
    videoEncoding: { maxBitrate: BigInt(v.maxBitrate), maxFramerate: v.fps },
  });
  await room.localParticipant!.publishTrack(track, options);
  const frames = makeFrames(v.width, v.height, 24);
  let i = 0;
  const timer = setInterval(() => {
    const frame = new VideoFrame(frames[i++ % frames.length]!, v.width, v.height, VideoBufferType.I420);
    try {
      source.captureFrame(frame);
    } catch {
      // source closed during shutdown
    }
  }, 1000 / v.fps);
  videoLoops.push({
    stop: () => {
      clearInterval(timer);
      void source.close().catch(() => undefined);
    },
  });
}

async function join(req: Request): Promise<Record<string, unknown>> {
  const identities = req.identities ?? [];
  const joinMs: number[] = [];
  const concurrency = Math.max(1, req.concurrency ?? 4);
  let next = 0;
  const one = async (identity: string) => {
    const t0 = performance.now();
    const token = await mintToken(identity, req.room!);
    const client = await connectRtcNode(req.wsUrl!, token, { autoSubscribe: true });
    clients.push(client);
    if (req.publish === 'audio') await client.publishTone(440 + clients.length * 10, { amplitude: 0.3 });
    if (req.publish === 'video') await publishVideo(client.room, req.video!);
    joinMs.push(performance.now() - t0);
  };
  await Promise.all(
    Array.from({ length: Math.min(concurrency, identities.length) }, async () => {
      while (next < identities.length) await one(identities[next++]!);
    }),
  );
  return { joinMs };
}

async function stats(): Promise<Record<string, unknown>> {
  let inPackets = 0;
  let inBytes = 0;
  let outPackets = 0;
  let inStreams = 0;
  let framesDecoded = 0;
  const byWidth: Record<string, number> = {};
  await Promise.all(
    clients.map(async (c) => {
      const s = await c.room.getRtcStats().catch(() => undefined);
      if (!s) return;
      for (const st of s.subscriberStats) {
        if (st.stats.case !== 'inboundRtp') continue;
        const v = st.stats.value;
        const n = Number(v.received?.packetsReceived ?? 0n);
        inPackets += n;
        inBytes += Number(v.inbound?.bytesReceived ?? 0n);
        framesDecoded += v.inbound?.framesDecoded ?? 0;
        inStreams++;
        const w = v.inbound?.frameWidth;
        if (w) byWidth[String(w)] = (byWidth[String(w)] ?? 0) + 1;
      }
      for (const st of s.publisherStats) {
        if (st.stats.case === 'outboundRtp') outPackets += Number(st.stats.value.sent?.packetsSent ?? 0n);
      }
    }),
  );
  return { inPackets, inBytes, outPackets, inStreams, framesDecoded, byWidth, rooms: clients.length };
}

/** Token → connected → subscribed → first decoded audio frame, for one fresh participant. */
async function joinProbe(req: Request): Promise<Record<string, unknown>> {
  const identity = req.identities![0]!;
  const t0 = performance.now();
  const token = await mintToken(identity, req.room!);
  const room = new Room();
  const subscribed = new Promise<RemoteTrack>((resolve) => {
    room.on(RoomEvent.TrackSubscribed, (track: RemoteTrack) => {
      if (track.kind === TrackKind.KIND_AUDIO) resolve(track);
    });
  });
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error('join probe timed out after 15 s')), 15_000);
  });
  try {
    await Promise.race([room.connect(req.wsUrl!, token, { autoSubscribe: true, dynacast: false }), timeout]);
    const tConnected = performance.now();
    const track = await Promise.race([subscribed, timeout]);
    const tSubscribed = performance.now();
    const stream = new AudioStream(track, 48_000, 1);
    const reader = stream.getReader();
    try {
      await Promise.race([reader.read(), timeout]);
    } finally {
      reader.releaseLock();
      await stream.cancel().catch(() => undefined);
    }
    const tFrame = performance.now();
    return { connectMs: tConnected - t0, subscribedMs: tSubscribed - t0, firstFrameMs: tFrame - t0 };
  } finally {
    clearTimeout(timer);
    await room.disconnect().catch(() => undefined);
  }
}

async function closeAll(): Promise<void> {
  for (const v of videoLoops) v.stop();
  await Promise.all(clients.map((c) => Promise.race([c.disconnect(), new Promise((r) => setTimeout(r, 3000))])));
}

serveParent<Request>(async (raw): Promise<Record<string, unknown>> => {
  switch (raw.type) {
    case 'join':
      return await join(raw);
    case 'stats':
      return await stats();
    case 'joinProbe':
      return await joinProbe(raw);
    case 'close':
      await closeAll();
      return {};
  }
}, closeAll);
