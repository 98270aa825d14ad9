/**
 * A small test client around @livekit/rtc-node's Room: connect, publish a sine tone through an
 * AudioSource, collect the audio frames received on a subscribed track, wait for room events
 * with bounded timeouts, count the audible frames of a track, and estimate a tone’s frequency
 * (Goertzel scan + zero crossings).
 * Every client must be `disconnect()`ed by the test that made it.
 */
import {
  AudioFrame,
  AudioSource,
  AudioStream,
  LocalAudioTrack,
  Room,
  RoomEvent,
  TrackPublishOptions,
  TrackSource,
  type DataPacketKind,
  type DisconnectReason,
  type LocalTrackPublication,
  type Participant,
  type RemoteParticipant,
  type RemoteTrack,
  type RemoteTrackPublication,
  type TrackPublication,
} from '@livekit/rtc-node';
import { startTestSfu, type TestSfu } from './sfu-harness.ts';

/** The Room events the tests wait on (rtc-node does not export its callback map). */
export interface RoomCallbacks {
  participantConnected: (participant: RemoteParticipant) => void;
  participantDisconnected: (participant: RemoteParticipant) => void;
  trackPublished: (publication: RemoteTrackPublication, participant: RemoteParticipant) => void;
  trackUnpublished: (publication: RemoteTrackPublication, participant: RemoteParticipant) => void;
  trackSubscribed: (track: RemoteTrack, publication: RemoteTrackPublication, participant: RemoteParticipant) => void;
  trackUnsubscribed: (track: RemoteTrack, publication: RemoteTrackPublication, participant: RemoteParticipant) => void;
  trackMuted: (publication: TrackPublication, participant: Participant) => void;
  trackUnmuted: (publication: TrackPublication, participant: Participant) => void;
  dataReceived: (payload: Uint8Array, participant?: RemoteParticipant, kind?: DataPacketKind, topic?: string) => void;
  disconnected: (reason: DisconnectReason) => void;
  reconnecting: () => void;
  reconnected: () => void;
  tokenRefreshed: () => void;
  participantMetadataChanged: (metadata: string | undefined, participant: Participant) => void;
}

export const SAMPLE_RATE = 48_000;
const FRAME_SAMPLES = 480; // 10 ms

export interface ToneHandle {
  publication: LocalTrackPublication;
  stop(): Promise<void>;
}

export interface RtcNodeClient {
  room: Room;
  identity: string;
  publishTone(frequency: number, opts?: { amplitude?: number; name?: string }): Promise<ToneHandle>;
  /** Collects mono samples of a remote audio track until `samples` have arrived. */
  collectAudio(track: RemoteTrack, samples: number, timeoutMs?: number): Promise<Int16Array>;
  /** Resolves with the arguments of the first `event` whose arguments pass `match`. */
  waitForEvent<E extends keyof RoomCallbacks>(
    event: E,
    match?: (...args: Parameters<RoomCallbacks[E]>) => boolean,
    timeoutMs?: number,
  ): Promise<Parameters<RoomCallbacks[E]>>;
  disconnect(): Promise<void>;
}

export async function connectRtcNode(
  wsUrl: string,
  token: string,
  opts: { autoSubscribe?: boolean } = {},
): Promise<RtcNodeClient> {
  const room = new Room();
  await room.connect(wsUrl, token, { autoSubscribe: opts.autoSubscribe ?? true, dynacast: false });
  const tones: ToneHandle[] = [];
  const streams: AudioStream[] = [];
  const client: RtcNodeClient = {
    room,
    identity: room.localParticipant?.identity ?? '',

    async publishTone(frequency, { amplitude = 0.5, name = 'tone' } = {}) {
      const source = new AudioSource(SAMPLE_RATE, 1);
      const track = LocalAudioTrack.createAudioTrack(name, source);
      const options = new TrackPublishOptions({ source: TrackSource.SOURCE_MICROPHONE });
      const publication = await room.localParticipant!.publishTrack(track, options);
      const state = { running: true };
      let phase = 0;
      const step = (2 * Math.PI * frequency) / SAMPLE_RATE;
      const loop = (async () => {
        while (state.running) {
          const data = new Int16Array(FRAME_SAMPLES);
          for (let i = 0; i < FRAME_SAMPLES; i++) {
            data[i] = Math.round(Math.sin(phase) * amplitude * 32767);
            phase += step;
          }
          phase %= 2 * Math.PI;
          // captureFrame paces the loop: it waits while the source's queue is full.
          await source.captureFrame(new AudioFrame(data, SAMPLE_RATE, 1, FRAME_SAMPLES));
        }
      })();
      const handle: ToneHandle = {
        publication,
        async stop() {
          state.running = false;
          await loop.catch(() => undefined);
          await source.close().catch(() => undefined);
        },
      };
      tones.push(handle);
      return handle;
    },

    async collectAudio(track, samples, timeoutMs = 15_000) {
      const stream = new AudioStream(track, SAMPLE_RATE, 1);
      streams.push(stream);
      const reader = stream.getReader();
      const out = new Int16Array(samples);
      let filled = 0;
      const deadline = Date.now() + timeoutMs;
      try {
        while (filled < samples) {
          const remaining = deadline - Date.now();
          if (remaining <= 0) throw new Error(`timed out collecting audio (${filled}/${samples} samples)`);
          let timer: NodeJS.Timeout | undefined;
          const next = await Promise.race([
            reader.read(),
            new Promise<'timeout'>((resolve) => {
              timer = setTimeout(() => resolve('timeout'), remaining);
            }),
          ]);
          clearTimeout(timer);
          if (next === 'timeout') throw new Error(`timed out collecting audio (${filled}/${samples} samples)`);
          if (next.done) throw new Error('audio stream ended');
          const frame = next.value;
          const n = Math.min(frame.samplesPerChannel, samples - filled);
          for (let i = 0; i < n; i++) out[filled + i] = frame.data[i * frame.channels]!;
          filled += n;
        }
      } finally {
        reader.releaseLock();
        await stream.cancel().catch(() => undefined);
      }
      return out;
    },

    waitForEvent(event, match, timeoutMs = 10_000) {
      return new Promise((resolve, reject) => {
        const listener = (...args: unknown[]) => {
          const typed = args as Parameters<RoomCallbacks[typeof event]>;
          if (match && !(match as (...a: unknown[]) => boolean)(...typed)) return;
          clearTimeout(timer);
          room.off(event as RoomEvent, listener as never);
          resolve(typed);
        };
        const timer = setTimeout(() => {
          room.off(event as RoomEvent, listener as never);
          reject(new Error(`timed out after ${timeoutMs} ms waiting for ${String(event)} at ${client.identity}`));
        }, timeoutMs);
        room.on(event as RoomEvent, listener as never);
      });
    },

    async disconnect() {
      for (const tone of tones) await tone.stop();
      await room.disconnect().catch(() => undefined);
    },
  };
  return client;
}

/** Counts the 10 ms frames of `track` that carry the tone (silence/concealment does not count). */
export function countAudibleFrames(track: RemoteTrack): { readonly count: number; stop(): Promise<void> } {
  const stream = new AudioStream(track, SAMPLE_RATE, 1);
  const reader = stream.getReader();
  let count = 0;
  const state = { running: true };
  const loop = (async () => {
    while (state.running) {
      const next = await reader.read();
      if (next.done) return;
      const data = next.value.data;
      let sum = 0;
      for (let i = 0; i < data.length; i++) sum += data[i]! * data[i]!;
      if (Math.sqrt(sum / Math.max(1, data.length)) > 1000) count++;
    }
  })();
  return {
    get count() {
      return count;
    },
    async stop() {
      state.running = false;
      reader.releaseLock();
      await stream.cancel().catch(() => undefined);
      await loop.catch(() => undefined);
    },
  };
}

/** Goertzel power of `freq` in `samples`. */
export function goertzelPower(samples: Int16Array, freq: number, sampleRate = SAMPLE_RATE): number {
  const k = (2 * Math.PI * freq) / sampleRate;
  const coeff = 2 * Math.cos(k);
  let s1 = 0;
  let s2 = 0;
  for (const x of samples) {
    const s = x + coeff * s1 - s2;
    s2 = s1;
    s1 = s;
  }
  return s1 * s1 + s2 * s2 - coeff * s1 * s2;
}

/** The strongest frequency between `lo` and `hi` Hz (1 Hz steps), by Goertzel. */
export function dominantFrequency(samples: Int16Array, lo = 50, hi = 2000, sampleRate = SAMPLE_RATE): number {
  let best = lo;
  let bestPower = -1;
  for (let f = lo; f <= hi; f += 1) {
    const p = goertzelPower(samples, f, sampleRate);
    if (p > bestPower) {
      bestPower = p;
      best = f;
    }
  }
  return best;
}

/** Frequency estimated from zero crossings (for a clean single tone). */
export function zeroCrossingFrequency(samples: Int16Array, sampleRate = SAMPLE_RATE): number {
  let crossings = 0;
  for (let i = 1; i < samples.length; i++) {
    if ((samples[i - 1]! < 0 && samples[i]! >= 0) || (samples[i - 1]! >= 0 && samples[i]! < 0)) crossings++;
  }
  return crossings / 2 / (samples.length / sampleRate);
}

/** Root mean square of the samples, to tell a tone from silence. */
export function rms(samples: Int16Array): number {
  let sum = 0;
  for (const x of samples) sum += x * x;
  return Math.sqrt(sum / Math.max(1, samples.length));
}

export { RoomEvent };

/**
 * One test's SFU and rtc-node clients, ended together by `end()` (call it in afterEach):
 * registered cleanups first, the last registered first (tone publishers, streams), then the
 * clients, then the SFU.
 */
export interface RtcNodeScene {
  start(opts?: Parameters<typeof startTestSfu>[0]): Promise<TestSfu>;
  /** The SFU `start()` made. */
  readonly sfu: TestSfu;
  /** Connects `identity` to the scene's SFU (room `test-room`) with a default token. */
  connect(identity: string): Promise<RtcNodeClient>;
  onEnd(cleanup: () => Promise<void>): void;
  end(): Promise<void>;
}

export function rtcNodeScene(): RtcNodeScene {
  let sfu: TestSfu | undefined;
  const clients: RtcNodeClient[] = [];
  const cleanups: (() => Promise<void>)[] = [];
  const started = (): TestSfu => {
    if (!sfu) throw new Error('rtcNodeScene: start() first');
    return sfu;
  };
  return {
    async start(opts) {
      sfu = await startTestSfu(opts);
      return sfu;
    },
    get sfu() {
      return started();
    },
    async connect(identity) {
      const s = started();
      const client = await connectRtcNode(s.wsUrl, await s.token(identity));
      clients.push(client);
      return client;
    },
    onEnd(cleanup) {
      cleanups.push(cleanup);
    },
    async end() {
      for (const cleanup of cleanups.splice(0).toReversed()) await cleanup();
      for (const client of clients.splice(0)) await client.disconnect();
      await sfu?.stop();
      sfu = undefined;
    },
  };
}
