/**
 * A tiny LiveKit Agents worker for trying agent dispatch against this project's SFU: no model,
 * no network beyond the SFU. Each job joins its room as an agent participant, publishes one
 * audio track, greets with a tone (GREETING_HZ for GREETING_MS) and then plays back everything
 * it hears from the others, ECHO_DELAY_MS later. Run it with the @livekit/agents CLI:
 *
 *   LIVEKIT_URL=ws://127.0.0.1:7880 LIVEKIT_API_KEY=… LIVEKIT_API_SECRET=… \
 *     node examples/tone-agent/agent.ts dev          # or `start` (production defaults)
 *
 * Without LIVEKIT_AGENT_NAME it registers for automatic dispatch (every new room); with it, it
 * waits for explicit dispatches (AgentDispatchService, a token's roomConfig.agents, or the
 * bridge's agent requests). TONE_AGENT_GREETING_HZ / _GREETING_MS / _ECHO_DELAY_MS tune it;
 * TONE_AGENT_LOAD makes the worker report a fixed load (0-1) instead of its CPU load.
 * Its own package because @livekit/agents pins @livekit/rtc-node 0.13.
 */
import { fileURLToPath } from 'node:url';
import { AutoSubscribe, cli, defineAgent, ServerOptions, type JobContext } from '@livekit/agents';
import {
  AudioFrame,
  AudioSource,
  AudioStream,
  LocalAudioTrack,
  RoomEvent,
  TrackKind,
  TrackPublishOptions,
  TrackSource,
  type RemoteTrack,
} from '@livekit/rtc-node';

const SAMPLE_RATE = 48_000;
const FRAME_SAMPLES = 480; // 10 ms

function setting(name: string, fallback: number): number {
  const raw = process.env[name];
  const n = raw === undefined ? Number.NaN : Number(raw);
  return Number.isFinite(n) && n >= 0 ? n : fallback;
}

/** `ms` of a sine tone as 10 ms frames. */
function toneFrames(hz: number, ms: number): AudioFrame[] {
  const frames: AudioFrame[] = [];
  const step = (2 * Math.PI * hz) / SAMPLE_RATE;
  let phase = 0;
  for (let f = 0; f < Math.ceil(ms / 10); f++) {
    const data = new Int16Array(FRAME_SAMPLES);
    for (let i = 0; i < FRAME_SAMPLES; i++) {
      data[i] = Math.round(Math.sin(phase) * 0.5 * 32767);
      phase += step;
    }
    frames.push(new AudioFrame(data, SAMPLE_RATE, 1, FRAME_SAMPLES));
  }
  return frames;
}

export default defineAgent({
  entry: async (ctx: JobContext) => {
    const greetingHz = setting('TONE_AGENT_GREETING_HZ', 660);
    const greetingMs = setting('TONE_AGENT_GREETING_MS', 3000);
    const echoDelayMs = setting('TONE_AGENT_ECHO_DELAY_MS', 1000);
    await ctx.connect(undefined, AutoSubscribe.AUDIO_ONLY);
    const room = ctx.room;
    const source = new AudioSource(SAMPLE_RATE, 1);
    const track = LocalAudioTrack.createAudioTrack('tone-agent', source);
    await room.localParticipant!.publishTrack(track, new TrackPublishOptions({ source: TrackSource.SOURCE_MICROPHONE }));

    // One output chain: the greeting first, then the echo, never mixed.
    let output: Promise<void> = Promise.resolve();
    let closed = false;
    const play = (frame: AudioFrame) => {
      output = output.then(() => (closed ? undefined : source.captureFrame(frame))).catch(() => undefined);
    };
    for (const frame of toneFrames(greetingHz, greetingMs)) play(frame);

    const listen = async (remote: RemoteTrack) => {
      if (remote.kind !== TrackKind.KIND_AUDIO) return;
      const stream = new AudioStream(remote, SAMPLE_RATE, 1);
      for await (const frame of stream) {
        if (closed) break;
        const copy = new AudioFrame(new Int16Array(frame.data), frame.sampleRate, frame.channels, frame.samplesPerChannel);
        setTimeout(() => play(copy), echoDelayMs);
      }
    };
    room.on(RoomEvent.TrackSubscribed, (remote: RemoteTrack) => void listen(remote).catch(() => undefined));
    for (const p of room.remoteParticipants.values()) {
      for (const pub of p.trackPublications.values()) if (pub.track) void listen(pub.track as RemoteTrack).catch(() => undefined);
    }
    ctx.addShutdownCallback(async () => {
      closed = true;
      await source.close().catch(() => undefined);
    });
  },
});

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  // TONE_AGENT_LOAD reports a fixed load instead of the CPU's: the server gives jobs to workers
  // by spare load (1 - load), so on a saturated test machine every worker would look full.
  const fixedLoad = process.env.TONE_AGENT_LOAD === undefined ? undefined : setting('TONE_AGENT_LOAD', 0);
  cli.runApp(
    new ServerOptions({
      agent: fileURLToPath(import.meta.url),
      ...(fixedLoad === undefined ? {} : { loadFunc: async () => fixedLoad }),
    }),
  );
}
