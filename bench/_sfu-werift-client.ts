/**
 * A minimal LiveKit (v0 signalling) client on werift for the SFU benchmark, where rtc-node
 * cannot do what is measured: it publishes raw RTP whose payload carries a send timestamp
 * (an Opus TOC byte, the marker `LAT1`, then `performance.now()` as a float64), and it
 * subscribes and hands every received RTP packet to a callback, optionally asking the SFU for a
 * video size with `UpdateTrackSettings` (what a shrunk or grown video element sends).
 *
 * Flow: WS join; the SFU's subscriber offers are answered one at a time (remote transceivers
 * hooked before setRemoteDescription, see werift-and-machine-notes.md §2); publishing sends
 * `add_track` with the sender's msid track id as `cid`, waits for `track_published`, then offers.
 * ICE only on 127.0.0.1 within `portRange`. `close()` leaves and closes both PCs. Every wait is
 * bounded.
 */
import WebSocket from 'ws';
import {
  MediaStream,
  RTCPeerConnection,
  RtpHeader,
  RtpPacket,
  useOPUS,
  useSdesMid,
  useVP8,
  type PeerConfig,
  type RTCRtpTransceiver,
} from 'werift';
import {
  AddTrackRequest,
  LeaveRequest,
  SessionDescription,
  SignalRequest,
  SignalResponse,
  TrackSource,
  TrackType,
  UpdateTrackSettings,
} from '@livekit/protocol';

export const STAMP_MAGIC = 0x4c415431; // 'LAT1'

export function weriftPeerConfig(portRange: [number, number]): Partial<PeerConfig> {
  return {
    codecs: { audio: [useOPUS()], video: [useVP8()] },
    headerExtensions: { audio: [useSdesMid()], video: [useSdesMid()] },
    iceServers: [],
    icePortRange: portRange,
    iceUseIpv4: false,
    iceUseIpv6: false,
    iceAdditionalHostAddresses: ['127.0.0.1'],
    iceInterfaceAddresses: { udp4: '127.0.0.1' },
    bundlePolicy: 'max-bundle',
  };
}

export async function waitGathered(pc: RTCPeerConnection, timeoutMs = 5000): Promise<void> {
  if (pc.iceGatheringState === 'complete') return;
  await new Promise<void>((resolve) => {
    const timer = setTimeout(() => {
      sub.unSubscribe();
      resolve();
    }, timeoutMs);
    const sub = pc.iceGatheringStateChange.subscribe((s) => {
      if (s === 'complete') {
        clearTimeout(timer);
        sub.unSubscribe();
        resolve();
      }
    });
  });
}

export async function waitConnected(pc: RTCPeerConnection, what: string, timeoutMs = 10_000): Promise<void> {
  if (pc.connectionState === 'connected') return;
  await new Promise<void>((resolve, reject) => {
    const timer = setTimeout(() => {
      sub.unSubscribe();
      reject(new Error(`${what}: not connected after ${timeoutMs} ms (${pc.connectionState})`));
    }, timeoutMs);
    const sub = pc.connectionStateChange.subscribe((s) => {
      if (s === 'connected') {
        clearTimeout(timer);
        sub.unSubscribe();
        resolve();
      }
    });
  });
}

/** Payload: Opus TOC byte, magic, float64 send time (performance.now, ms), padding to `size`. */
export function stampPayload(size = 60): Buffer {
  const buf = Buffer.alloc(Math.max(13, size));
  buf[0] = 0x78; // Opus TOC: SILK WB 20 ms, mono, one frame
  buf.writeUInt32BE(STAMP_MAGIC, 1);
  buf.writeDoubleBE(performance.now(), 5);
  return buf;
}

/** Milliseconds since the stamp, or undefined when the payload carries none. */
export function stampAge(payload: Buffer): number | undefined {
  if (payload.length < 13 || payload.readUInt32BE(1) !== STAMP_MAGIC) return undefined;
  return performance.now() - payload.readDoubleBE(5);
}

/** Sends stamped audio RTP every `intervalMs` on a sender; returns the stopper. */
export function startStampedAudio(transceiver: RTCRtpTransceiver, intervalMs = 20): () => void {
  let seq = 1000;
  let ts = 0;
  const ssrc = transceiver.sender.ssrc;
  const pt = transceiver.sender.codec?.payloadType ?? 111;
  const timer = setInterval(() => {
    const header = new RtpHeader({ payloadType: pt, sequenceNumber: seq, timestamp: ts >>> 0, ssrc, marker: false });
    seq = (seq + 1) & 0xffff;
    ts += 48 * intervalMs;
    transceiver.sender.sendRtp(new RtpPacket(header, stampPayload())).catch(() => undefined);
  }, intervalMs);
  return () => clearInterval(timer);
}

export interface WeriftLkOptions {
  portRange: [number, number];
  /** Every RTP packet received on the subscriber PC, with the SFU's stream id (`PA_x|TR_y`). */
  onRtp?: (rtp: RtpPacket, kind: 'audio' | 'video', streamId: string) => void;
  /** When set, each subscribed video track is asked for at this size. */
  videoSize?: { width: number; height: number };
  /** false: join with auto_subscribe=0 (a publisher that receives nothing). Default true. */
  autoSubscribe?: boolean;
}

export class WeriftLkClient {
  readonly sub: RTCPeerConnection;
  pub: RTCPeerConnection | undefined;
  private readonly ws: WebSocket;
  private readonly opts: WeriftLkOptions;
  private subQueue: Promise<void> = Promise.resolve();
  private readonly waiters = new Set<(m: SignalResponse) => boolean>();
  private readonly pingTimer: NodeJS.Timeout;
  private readonly askedTracks = new Set<string>();
  private closed = false;

  private constructor(ws: WebSocket, opts: WeriftLkOptions) {
    this.ws = ws;
    this.opts = opts;
    this.sub = new RTCPeerConnection(weriftPeerConfig(opts.portRange));
    this.sub.onRemoteTransceiverAdded.subscribe((transceiver) => {
      transceiver.onTrack.subscribe((track) => {
        const kind = track.kind === 'video' ? 'video' : 'audio';
        track.onReceiveRtp.subscribe((rtp) => {
          this.opts.onRtp?.(rtp, kind, transceiver.receiver.remoteStreamId ?? transceiver.mid ?? '');
        });
      });
    });
    ws.on('message', (data: Buffer) => {
      let msg: SignalResponse;
      try {
        msg = SignalResponse.fromBinary(new Uint8Array(data));
      } catch {
        return;
      }
      this.onSignal(msg);
    });
    this.pingTimer = setInterval(() => {
      this.send(new SignalRequest({ message: { case: 'ping', value: BigInt(Date.now()) } }));
    }, 5000);
  }

  static async connect(wsUrl: string, token: string, opts: WeriftLkOptions): Promise<WeriftLkClient> {
    const auto = opts.autoSubscribe === false ? 0 : 1;
    const ws = new WebSocket(`${wsUrl}/rtc?access_token=${encodeURIComponent(token)}&auto_subscribe=${auto}&protocol=12&sdk=js`);
    ws.binaryType = 'nodebuffer';
    const client = new WeriftLkClient(ws, opts);
    // Listen before the socket opens: the join is the SFU's first frame.
    const joined = client.next('join', 20_000);
    joined.catch(() => undefined);
    await new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error('signal connection timed out')), 10_000);
      ws.once('open', () => {
        clearTimeout(timer);
        resolve();
      });
      ws.once('error', (err) => {
        clearTimeout(timer);
        reject(err);
      });
    });
    try {
      await joined;
    } catch (err) {
      await client.close();
      throw err;
    }
    return client;
  }

  private send(req: SignalRequest): void {
    if (this.ws.readyState === WebSocket.OPEN) this.ws.send(req.toBinary());
  }

  /** Resolves with the next message of a kind (bounded). */
  next<C extends NonNullable<SignalResponse['message']['case']>>(
    c: C,
    timeoutMs: number,
    match: (m: SignalResponse) => boolean = () => true,
  ): Promise<SignalResponse> {
    return new Promise((resolve, reject) => {
      const waiter = (m: SignalResponse) => {
        if (m.message.case !== c || !match(m)) return false;
        clearTimeout(timer);
        resolve(m);
        return true;
      };
      const timer = setTimeout(() => {
        this.waiters.delete(waiter);
        reject(new Error(`no ${c} within ${timeoutMs} ms`));
      }, timeoutMs);
      this.waiters.add(waiter);
    });
  }

  private onSignal(msg: SignalResponse): void {
    for (const w of this.waiters) if (w(msg)) this.waiters.delete(w);
    const m = msg.message;
    if (m.case === 'offer') {
      const { sdp, id } = m.value;
      this.subQueue = this.subQueue
        .then(async () => {
          if (this.closed) return;
          await this.sub.setRemoteDescription({ type: 'offer', sdp });
          const answer = await this.sub.createAnswer();
          await this.sub.setLocalDescription(answer);
          await waitGathered(this.sub);
          const local = this.sub.localDescription?.sdp ?? answer.sdp;
          this.send(
            new SignalRequest({ message: { case: 'answer', value: new SessionDescription({ type: 'answer', sdp: local, id }) } }),
          );
          this.askVideoSizes(sdp);
        })
        .catch(() => undefined);
    } else if (m.case === 'trickle') {
      let init: { candidate?: string; sdpMid?: string; sdpMLineIndex?: number };
      try {
        init = JSON.parse(m.value.candidateInit) as typeof init;
      } catch {
        return;
      }
      const pc = m.value.target === 1 ? this.sub : this.pub;
      if (pc && init.candidate) void pc.addIceCandidate(init as never).catch(() => undefined);
    }
  }

  /** UpdateTrackSettings for each video track id (`a=msid:PA_x|TR_y ...`) not asked yet. */
  private askVideoSizes(sdp: string): void {
    const size = this.opts.videoSize;
    if (!size) return;
    let kind = '';
    for (const line of sdp.split(/\r?\n/)) {
      if (line.startsWith('m=')) kind = line.slice(2).split(' ')[0] ?? '';
      const msid = /^a=msid:\S*\|(TR_\S+)/.exec(line);
      if (kind === 'video' && msid && !this.askedTracks.has(msid[1]!)) {
        this.askedTracks.add(msid[1]!);
        this.send(
          new SignalRequest({
            message: {
              case: 'trackSetting',
              value: new UpdateTrackSettings({ trackSids: [msid[1]!], width: size.width, height: size.height }),
            },
          }),
        );
      }
    }
  }

  /** Publishes one audio track and resolves when the publisher PC is connected. */
  async publishAudio(): Promise<RTCRtpTransceiver> {
    return await this.publishTrack('audio');
  }

  /**
   * Publishes one track (Opus microphone or a single-layer VP8 camera of `video` size) and
   * resolves when the publisher PC is connected.
   */
  async publishTrack(kind: 'audio' | 'video', video = { width: 640, height: 360 }): Promise<RTCRtpTransceiver> {
    const pc = new RTCPeerConnection(weriftPeerConfig(this.opts.portRange));
    this.pub = pc;
    const transceiver = pc.addTransceiver(kind, { direction: 'sendonly', streams: [new MediaStream({ id: 'bench-stream' })] });
    const cid = transceiver.sender.trackId;
    const published = this.next('trackPublished', 10_000, (m) => m.message.case === 'trackPublished' && m.message.value.cid === cid);
    const track =
      kind === 'audio'
        ? new AddTrackRequest({ cid, name: 'latency', type: TrackType.AUDIO, source: TrackSource.MICROPHONE })
        : new AddTrackRequest({ cid, name: 'camera', type: TrackType.VIDEO, source: TrackSource.CAMERA, width: video.width, height: video.height });
    this.send(new SignalRequest({ message: { case: 'addTrack', value: track } }));
    await published;
    const offer = await pc.createOffer();
    await pc.setLocalDescription(offer);
    await waitGathered(pc);
    const answered = this.next('answer', 10_000);
    this.send(
      new SignalRequest({
        message: {
          case: 'offer',
          value: new SessionDescription({ type: 'offer', sdp: pc.localDescription?.sdp ?? offer.sdp, id: 1 }),
        },
      }),
    );
    const answer = await answered;
    if (answer.message.case !== 'answer') throw new Error('unexpected signal');
    await pc.setRemoteDescription({ type: 'answer', sdp: answer.message.value.sdp });
    await waitConnected(pc, 'publisher PC');
    return transceiver;
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    clearInterval(this.pingTimer);
    for (const w of this.waiters) this.waiters.delete(w);
    this.send(new SignalRequest({ message: { case: 'leave', value: new LeaveRequest({}) } }));
    this.ws.close();
    await Promise.race([
      Promise.all([this.sub.close(), this.pub?.close()]).catch(() => undefined),
      new Promise((r) => setTimeout(r, 3000)),
    ]);
  }
}
