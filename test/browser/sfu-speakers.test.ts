/**
 * Active speakers end to end: alice (@livekit/rtc-node) publishes a microphone track that is
 * silent, bob (livekit-client in Chromium) subscribes; when alice starts speaking (a 300 Hz
 * tone, libwebrtc sets ssrc-audio-level on every packet) bob's livekit-client reports her in
 * ActiveSpeakersChanged within 1 s, with a level above zero; when she falls silent she leaves
 * the active speakers again.
 */
import { afterEach, describe, expect, it } from 'vitest';
import { AudioFrame, AudioSource, LocalAudioTrack, TrackPublishOptions, TrackSource, type Room } from '@livekit/rtc-node';
import { connectRtcNode, SAMPLE_RATE } from '../support/rtc-node.ts';
import { browserScene, joinFromPage, waitForPageEvent } from './sfu-browser-client.ts';
import { waitFor } from '../support/wait.ts';

interface SpeakerEvent {
  at: number;
  speakers: { identity: string; level: number }[];
}

/** A microphone whose loudness the test sets (0 = silence); returns the control and stop. */
async function publishMicrophone(room: Room): Promise<{ setAmplitude(a: number): void; stop(): Promise<void> }> {
  // A short queue (50 ms, default 1 s): the loudness change reaches the wire without delay.
  const source = new AudioSource(SAMPLE_RATE, 1, 50);
  const track = LocalAudioTrack.createAudioTrack('microphone', source);
  await room.localParticipant!.publishTrack(track, new TrackPublishOptions({ source: TrackSource.SOURCE_MICROPHONE }));
  const state = { running: true, amplitude: 0 };
  let phase = 0;
  const samples = SAMPLE_RATE / 100;
  const loop = (async () => {
    while (state.running) {
      const data = new Int16Array(samples);
      for (let i = 0; i < samples; i++) {
        data[i] = Math.round(Math.sin(phase) * state.amplitude * 32767);
        phase += (2 * Math.PI * 300) / SAMPLE_RATE;
      }
      phase %= 2 * Math.PI;
      await source.captureFrame(new AudioFrame(data, SAMPLE_RATE, 1, samples));
    }
  })();
  return {
    setAmplitude: (a) => {
      state.amplitude = a;
    },
    async stop() {
      state.running = false;
      await loop.catch(() => undefined);
      await source.close().catch(() => undefined);
    },
  };
}

describe('sfu active speakers', () => {
  const scene = browserScene();
  afterEach((ctx) => scene.end(ctx.task.result?.state === 'fail'));

  it('makes a participant who starts speaking the active speaker at the other client within 1 s', async () => {
    const sfu = await scene.start();
    const bob = await scene.page();
    await joinFromPage(bob.page, sfu.wsUrl, await sfu.token('bob'));
    await bob.page.evaluate(() => {
      const LK = window.LivekitClient;
      const room = window.testState.room as InstanceType<typeof LK.Room>;
      const events: SpeakerEvent[] = [];
      window.testState.speakerEvents = events;
      room.on(LK.RoomEvent.ActiveSpeakersChanged, (speakers) => {
        events.push({ at: Date.now(), speakers: speakers.map((s) => ({ identity: s.identity, level: s.audioLevel })) });
      });
    });
    const speakerEvents = () => bob.page.evaluate(() => (window.testState.speakerEvents as SpeakerEvent[]).slice());

    const alice = await connectRtcNode(sfu.wsUrl, await sfu.token('alice'));
    scene.onEnd(() => alice.disconnect());
    const mic = await publishMicrophone(alice.room);
    scene.onEnd(() => mic.stop());
    await waitForPageEvent(bob.page, (e) => e.type === 'trackSubscribed' && e.identity === 'alice', 'alice audio at bob');
    // Silence flows first: nobody is speaking.
    const room = sfu.sfu.rooms.getRoom('test-room')!;
    const audio = await waitFor('alice audio forwarded to bob', () => {
      const sub = [...room.participants.get('bob' as never)!.subscriptions.values()][0];
      return sub && sub.down.packetsSent > 25 ? sub : undefined;
    });
    expect(audio.track.info.type).toBe(0);
    expect((await speakerEvents()).some((e) => e.speakers.some((s) => s.identity === 'alice'))).toBe(false);

    const startedAt = Date.now();
    mic.setAmplitude(0.5);
    const active = await waitFor(
      'alice in ActiveSpeakersChanged at bob',
      async () => (await speakerEvents()).find((e) => e.speakers.some((s) => s.identity === 'alice')),
      { timeoutMs: 5000, intervalMs: 50 },
    );
    expect(active.at - startedAt).toBeLessThanOrEqual(1000);
    expect(active.speakers.find((s) => s.identity === 'alice')!.level).toBeGreaterThan(0);

    // Silent again: alice leaves the active speakers.
    mic.setAmplitude(0);
    await waitFor(
      'alice no longer an active speaker at bob',
      async () => {
        const events = await speakerEvents();
        const last = events.at(-1);
        return last && !last.speakers.some((s) => s.identity === 'alice');
      },
      { timeoutMs: 5000, intervalMs: 50 },
    );
  });
});
