/**
 * Child process of the SFU benchmark carrying a load that costs almost nothing per packet, so
 * the SFU can be driven to a full core on a two-core machine (bench/_sfu-saturate.ts):
 * - subscribers connect as a real client does (WebSocket join, SDP, ICE, DTLS, on werift, see
 *   _sfu-werift-client.ts); once their PC is up, every SRTP packet reaching their socket is only
 *   counted, and 1 in `sampleEvery` is decrypted and verified (SRTP authentication, then the
 *   payload's stamp), so corruption is still caught; RTCP and everything else goes to werift;
 * - publishers (werift, one track each) replay a fixed set of pre-built frames at real-time pace:
 *   Opus-sized audio (TOC byte, a wall-clock send stamp, filler; sizes cycling 60–120 bytes like
 *   a voice call, 50 a second) or single-layer VP8 video (three packets a frame, 25 frames a
 *   second, see VIDEO_PACKETS), one timer for all of them; `pause`/`resume` stop and restart a
 *   group's sending, so two SFUs can be measured one after the other in one run.
 * Requests over IPC (the reply echoes `id`): `join {group, wsUrl, room, identities, portRange,
 * sampleEvery}`, `publish {group, wsUrl, room, identities, portRange, kind}`, `pause {group}`,
 * `resume {group}`, `stats {group}`, `close`. Every wait is bounded.
 */
import type { RTCPeerConnection, RTCRtpTransceiver } from 'werift';
import { RtpHeader, RtpPacket } from 'werift';
import { mintToken, percentile, round } from './_sfu-procs.ts';
import { STAMP_MAGIC, WeriftLkClient, waitConnected } from './_sfu-werift-client.ts';
import { createWeriftGuard } from '../sfu/media/werift-guard.ts';
import { serveParent } from './_sfu-worker-ipc.ts';
import { createSilentLogger } from '../common/logger.ts';

/**
 * The SFU's own datagram guard on the load's peer connections too: this machine is shared and
 * other tests flood port ranges with forged datagrams; one forged DTLS alert ends an unguarded
 * werift session (a publisher then stops for good).
 */
const guard = createWeriftGuard({ logger: createSilentLogger() });

interface Request {
  id: number;
  type: 'join' | 'publish' | 'pause' | 'resume' | 'stats' | 'close';
  group?: string;
  wsUrl?: string;
  room?: string;
  identities?: string[];
  portRange?: [number, number];
  sampleEvery?: number;
  concurrency?: number;
  /** `publish`: what the publishers send (audio unless set). */
  kind?: 'audio' | 'video';
}

interface GroupCounters {
  packets: number;
  bytes: number;
  sampled: number;
  /** Sampled packets that failed SRTP authentication or carried no intact stamp. */
  corrupt: number;
  /** SRTP-looking datagrams from anyone but the SFU (not counted as received). */
  foreign: number;
  /** Wall-clock ms from the publisher's stamp to receipt, for the sampled packets. */
  ages: number[];
  subscribers: number;
  publishers: { transceiver: RTCRtpTransceiver; seq: number; ts: number }[];
  paused: boolean;
  /** RTP packets the group's publishers sent. */
  sent: number;
}

const groups = new Map<string, GroupCounters>();
const clients: WeriftLkClient[] = [];
let timer: NodeJS.Timeout | undefined;
let frameIndex = 0;
/** Real-time pacing: frames due since the first tick (a late timer sends what is due, at most 10). */
let pacingStart = 0;
let framesSent = 0;

const wallNow = () => performance.timeOrigin + performance.now();

function group(name: string): GroupCounters {
  let g = groups.get(name);
  if (!g) {
    g = { packets: 0, bytes: 0, sampled: 0, corrupt: 0, foreign: 0, ages: [], subscribers: 0, publishers: [], paused: true, sent: 0 };
    groups.set(name, g);
  }
  return g;
}

/** The audio frames publishers replay: Opus TOC (SILK WB 20 ms), magic, stamp slot, filler. */
const FRAMES = Array.from({ length: 50 }, (_, i) => {
  const buf = Buffer.alloc(60 + ((i * 37) % 61));
  buf[0] = 0x78;
  buf.writeUInt32BE(STAMP_MAGIC, 1);
  for (let j = 13; j < buf.length; j++) buf[j] = (i * 31 + j * 7) & 0xff;
  return buf;
});

/**
 * Video: 25 frames a second of three packets (1100, 1000 and 900 bytes: about 600 kbit/s, a
 * 640x360 camera layer), each packet a VP8 payload descriptor with a 15-bit PictureID (the
 * frame's first packet with S set), the VP8 header's first byte (a keyframe once a second, so
 * subscribers start without the publisher answering PLIs), then the magic and stamp as for
 * audio, then filler.
 */
const VIDEO_PACKET_SIZES = [1100, 1000, 900];
const VIDEO_KEYFRAME_EVERY = 25;
/** Where the magic sits in a payload: after the VP8 descriptor and header byte for video (X bit set). */
const stampAt = (payload: Buffer, offset: number) => ((payload[offset]! & 0x80) !== 0 ? offset + 5 : offset + 1);
const VIDEO_PACKETS = VIDEO_PACKET_SIZES.map((size, k) => {
  const buf = Buffer.alloc(size);
  buf[0] = k === 0 ? 0x90 : 0x80;
  buf[1] = 0x80;
  buf.writeUInt32BE(STAMP_MAGIC, 5);
  for (let j = 17; j < buf.length; j++) buf[j] = (k * 31 + j * 7) & 0xff;
  return buf;
});
const FRAME_MS = { audio: 20, video: 40 } as const;
/** What this process's publishers send (one kind per process, fixed by its first `publish`). */
let kind: 'audio' | 'video' | undefined;

interface SocketInternals {
  datagramReceived(data: Buffer, addr: unknown): void;
  transport?: { socket?: { setRecvBufferSize?(bytes: number): void } };
}

/** Receive buffer per subscriber socket: room for bursts while this process waits for a core. */
const RECV_BUFFER_BYTES = 1 << 21;
interface SrtpInternals {
  srtp?: { decrypt(buf: Buffer): Buffer };
}

/**
 * After the PC is up: SRTP (first byte 128–191, not RTCP's payload types 192–223) is counted
 * and sampled instead of going through werift's decrypt/parse/event path.
 */
function cheapen(pc: RTCPeerConnection, counters: GroupCounters, sampleEvery: number): void {
  let n = 0;
  const dtls = pc.dtlsTransports[0] as unknown as SrtpInternals | undefined;
  for (const ice of pc.iceTransports) {
    const connection = ice.connection as unknown as { protocols: SocketInternals[]; nominated?: { remoteAddr: readonly [string, number] } };
    const protocols = connection.protocols;
    for (const protocol of protocols) {
      try {
        protocol.transport?.socket?.setRecvBufferSize?.(RECV_BUFFER_BYTES);
      } catch {
        // capped by net.core.rmem_max: the default buffer stays
      }
      const original = protocol.datagramReceived.bind(protocol);
      protocol.datagramReceived = (data, addr) => {
        const b0 = data[0]!;
        const b1 = data[1]!;
        if (b0 < 128 || b0 > 191 || (b1 >= 192 && b1 <= 223)) {
          original(data, addr);
          return;
        }
        // Only from the SFU (the selected pair): the machine is shared, and other people's tests
        // flood port ranges; their datagrams would count as received and fail as corrupt.
        const from = addr as readonly [string, number];
        const remote = connection.nominated?.remoteAddr;
        if (!remote || from[1] !== remote[1] || from[0] !== remote[0]) {
          counters.foreign++;
          return;
        }
        counters.packets++;
        counters.bytes += data.length;
        if (++n % sampleEvery !== 0) return;
        counters.sampled++;
        try {
          const plain = dtls?.srtp?.decrypt(data);
          if (!plain) throw new Error('no SRTP session');
          const offset = RtpHeader.deSerialize(plain).payloadOffset;
          const at = stampAt(plain, offset);
          if (plain.readUInt32BE(at) !== STAMP_MAGIC) throw new Error('stamp');
          if (counters.ages.length < 20_000) counters.ages.push(wallNow() - plain.readDoubleBE(at + 4));
        } catch {
          counters.corrupt++;
        }
      };
    }
  }
}

async function join(req: Request): Promise<Record<string, unknown>> {
  const counters = group(req.group!);
  const identities = req.identities ?? [];
  const sampleEvery = Math.max(1, req.sampleEvery ?? 16);
  let next = 0;
  const failures: string[] = [];
  const one = async (identity: string) => {
    // A join that fails (ICE/DTLS timing out on a starved machine) is reported, not fatal: the
    // sweep computes delivery from the subscribers actually connected.
    let client: WeriftLkClient | undefined;
    try {
      client = await WeriftLkClient.connect(req.wsUrl!, await mintToken(identity, req.room!), { portRange: req.portRange! });
      clients.push(client);
      await waitConnected(client.sub, `subscriber ${identity}`, 20_000);
      guard.protect(client.sub);
      cheapen(client.sub, counters, sampleEvery);
      counters.subscribers++;
    } catch (err) {
      failures.push(`${identity}: ${(err as Error).message}`);
      await client?.close().catch(() => undefined);
    }
  };
  await Promise.all(
    Array.from({ length: Math.min(Math.max(1, req.concurrency ?? 4), identities.length) }, async () => {
      while (next < identities.length) await one(identities[next++]!);
    }),
  );
  return { subscribers: counters.subscribers, failures };
}

function tick(): void {
  const due = Math.floor((performance.now() - pacingStart) / FRAME_MS[kind ?? 'audio']) - framesSent;
  const n = Math.min(10, due);
  framesSent += Math.max(due, 0);
  for (let i = 0; i < n; i++) sendFrame();
}

/** The next frame's packets (templates, copied per publisher) and its RTP timestamp step. */
function nextFrame(): { packets: Buffer[]; tsStep: number } {
  const index = frameIndex++;
  if (kind !== 'video') return { packets: [FRAMES[index % FRAMES.length]!], tsStep: 960 };
  const pictureId = index & 0x7fff;
  const keyframe = index % VIDEO_KEYFRAME_EVERY === 0;
  for (const packet of VIDEO_PACKETS) {
    packet[2] = 0x80 | (pictureId >> 8);
    packet[3] = pictureId & 0xff;
    packet[4] = keyframe ? 0x10 : 0x11;
  }
  return { packets: VIDEO_PACKETS, tsStep: 3600 };
}

/** One frame from every publisher of every group that is not paused; video marks its last packet. */
function sendFrame(): void {
  const { packets, tsStep } = nextFrame();
  for (const g of groups.values()) {
    if (g.paused) continue;
    for (const p of g.publishers) {
      const sender = p.transceiver.sender;
      for (let k = 0; k < packets.length; k++) {
        const marker = kind === 'video' && k === packets.length - 1;
        const header = new RtpHeader({ payloadType: sender.codec?.payloadType ?? (kind === 'video' ? 96 : 111), sequenceNumber: p.seq, timestamp: p.ts >>> 0, ssrc: sender.ssrc, marker });
        p.seq = (p.seq + 1) & 0xffff;
        const payload = Buffer.from(packets[k]!);
        payload.writeDoubleBE(wallNow(), stampAt(payload, 0) + 4);
        sender.sendRtp(new RtpPacket(header, payload)).catch(() => undefined);
        g.sent++;
      }
      p.ts += tsStep;
    }
  }
}

async function publish(req: Request): Promise<Record<string, unknown>> {
  const counters = group(req.group!);
  const want = req.kind ?? 'audio';
  if (kind !== undefined && kind !== want) throw new Error(`this process publishes ${kind}, not ${want}`);
  kind = want;
  for (const identity of req.identities ?? []) {
    const client = await WeriftLkClient.connect(req.wsUrl!, await mintToken(identity, req.room!), {
      portRange: req.portRange!,
      autoSubscribe: false,
    });
    clients.push(client);
    const transceiver = await client.publishTrack(want);
    if (client.pub) guard.protect(client.pub);
    guard.protect(client.sub);
    counters.publishers.push({ transceiver, seq: 1000, ts: 0 });
  }
  if (!timer) {
    pacingStart = performance.now();
    framesSent = 0;
    timer = setInterval(tick, 10);
  }
  return { publishers: counters.publishers.length };
}

function stats(name: string): Record<string, unknown> {
  const g = group(name);
  const ages = g.ages;
  g.ages = [];
  return {
    // When the counts were read (wall ms): rates use this process's own clock, not the IPC round trip.
    atMs: wallNow(),
    inPackets: g.packets,
    inBytes: g.bytes,
    sampled: g.sampled,
    corrupt: g.corrupt,
    foreign: g.foreign,
    subscribers: g.subscribers,
    outPackets: g.sent,
    ages: ages.length ? { samples: ages.length, p50Ms: round(percentile(ages, 50), 3), p99Ms: round(percentile(ages, 99), 3) } : null,
  };
}

async function closeAll(): Promise<void> {
  clearInterval(timer);
  await Promise.all(clients.map((c) => c.close()));
}

serveParent<Request>(async (raw): Promise<Record<string, unknown>> => {
  switch (raw.type) {
    case 'join':
      return await join(raw);
    case 'publish':
      return await publish(raw);
    case 'pause':
      group(raw.group!).paused = true;
      return {};
    case 'resume':
      group(raw.group!).paused = false;
      return {};
    case 'stats':
      return stats(raw.group!);
    case 'close':
      await closeAll();
      return {};
  }
}, closeAll);
