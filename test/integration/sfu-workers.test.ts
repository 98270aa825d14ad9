/**
 * Media workers (`workers: 2`, `worker_placement: spread`): a room whose participants sit on
 * different worker threads, with real rtc-node clients. Each published track crosses the relay
 * ring to the other worker once; the tests prove where each participant landed
 * (`mediaWorkers.workerOf`) and that media flows across.
 */
import { afterEach, describe, expect, it } from 'vitest';
import { TrackKind, type RemoteTrack } from '@livekit/rtc-node';
import { countAudibleFrames, dominantFrequency, rtcNodeScene, type RtcNodeClient } from '../support/rtc-node.ts';
import { expectNackRecovery } from '../support/rtc-node-video.ts';
import { waitFor } from '../support/wait.ts';
import { metricSum, scrapeMetrics } from '../../bench/_sfu-procs.ts';
import { PING_TIMEOUT_MS } from '../../sfu/media/workers/pool.ts';

const DROP_HOOKS = new URL('../support/worker-hooks/drop-video.ts', import.meta.url).href;
const STALL_HOOKS = new URL('../support/worker-hooks/stall.ts', import.meta.url).href;

/** The remote audio tracks `client` receives now, by publisher identity. */
function audioTracks(client: RtcNodeClient): Map<string, RemoteTrack> {
  const out = new Map<string, RemoteTrack>();
  for (const p of client.room.remoteParticipants.values()) {
    for (const pub of p.trackPublications.values()) {
      if (pub.kind === TrackKind.KIND_AUDIO && pub.track) out.set(p.identity, pub.track as RemoteTrack);
    }
  }
  return out;
}

describe('sfu media workers', () => {
  const scene = rtcNodeScene();
  afterEach(() => scene.end());

  it('carries audio both ways between participants on different workers', async () => {
    const sfu = await scene.start({ workers: 2, workerPlacement: 'spread' });
    const alice = await scene.connect('alice');
    const bob = await scene.connect('bob');
    const pool = sfu.sfu.mediaWorkers!;
    const wa = pool.workerOf(alice.room.localParticipant!.sid!);
    const wb = pool.workerOf(bob.room.localParticipant!.sid!);
    expect(wa).toBeDefined();
    expect(wb).toBeDefined();
    expect(wa).not.toBe(wb);

    const subscribedAtBob = bob.waitForEvent('trackSubscribed', (t) => t.kind === TrackKind.KIND_AUDIO, 15_000);
    const subscribedAtAlice = alice.waitForEvent('trackSubscribed', (t) => t.kind === TrackKind.KIND_AUDIO, 15_000);
    await alice.publishTone(440);
    await bob.publishTone(660);
    const [atBob] = await subscribedAtBob;
    const [atAlice] = await subscribedAtAlice;
    const heardByBob = await bob.collectAudio(atBob, 48_000);
    const heardByAlice = await alice.collectAudio(atAlice, 48_000);
    expect(Math.abs(dominantFrequency(heardByBob.subarray(24_000)) - 440)).toBeLessThan(15);
    expect(Math.abs(dominantFrequency(heardByAlice.subarray(24_000)) - 660)).toBeLessThan(15);

    // /metrics: each worker's participants, packets, CPU and relay, labelled by worker only; the
    // packets the workers counted reach LiveKit's own series.
    const snap = await waitFor('worker metrics after a stats push', async () => {
      const m = await scrapeMetrics(sfu.url);
      return metricSum(m, 'matrixrtc_sfu_worker_relay_read') > 0 && metricSum(m, 'matrixrtc_sfu_worker_cpu_seconds') > 0 ? m : undefined;
    });
    for (const w of ['0', '1']) {
      expect(metricSum(snap, 'matrixrtc_sfu_worker_participants', [`worker="${w}"`])).toBe(1);
      expect(metricSum(snap, 'matrixrtc_sfu_worker_packets_in', [`worker="${w}"`])).toBeGreaterThan(0);
      expect(metricSum(snap, 'matrixrtc_sfu_worker_relay_written', [`worker="${w}"`])).toBeGreaterThan(0);
    }
    expect(metricSum(snap, 'matrixrtc_sfu_worker_relay_drops')).toBe(0);
    expect(metricSum(snap, 'livekit_packet_total', ['direction="outgoing"'])).toBeGreaterThan(0);
    for (const key of snap.keys()) if (key.startsWith('matrixrtc_sfu_worker_')) expect(key).not.toMatch(/room|identity|participant=/);
  });

  it('recovers video packets lost on the way to a subscriber on another worker from that worker\'s copy of the cache', async () => {
    const channel = `drops-${process.pid}-${Date.now()}`;
    const drops = new BroadcastChannel(channel);
    let dropped = 0;
    drops.addEventListener('message', () => dropped++);
    scene.onEnd(async () => drops.close());
    const sfu = await scene.start({ workers: 2, workerPlacement: 'spread', workerHooks: { module: DROP_HOOKS, data: { everyNth: 20, channel } } });
    const alice = await scene.connect('alice');
    const bob = await scene.connect('bob');
    const pool = sfu.sfu.mediaWorkers!;
    expect(pool.workerOf(alice.room.localParticipant!.sid!)).not.toBe(pool.workerOf(bob.room.localParticipant!.sid!));
    // Bob's worker answers from its copy of alice's track: the cache lives with the subscriber.
    await expectNackRecovery(scene, sfu, alice, bob, () => dropped);
  });

  it('a worker killed mid-call: its participants reconnect and hear everyone again, the other worker never stops', async () => {
    const sfu = await scene.start({ workers: 2, workerPlacement: 'spread' });
    const pool = sfu.sfu.mediaWorkers!;
    const names = ['alice', 'bob', 'carol', 'dave'];
    const tones: Record<string, number> = { alice: 440, bob: 550, carol: 660, dave: 770 };
    const clients = new Map<string, RtcNodeClient>();
    for (const name of names) {
      const c = await scene.connect(name);
      clients.set(name, c);
      await c.publishTone(tones[name]!);
    }
    const workerOf = (name: string) => pool.workerOf(clients.get(name)!.room.localParticipant!.sid!);
    const doomed = workerOf('alice')!;
    const onDoomed = names.filter((n) => workerOf(n) === doomed);
    const survivors = names.filter((n) => workerOf(n) !== doomed);
    expect(onDoomed.length).toBe(2);
    expect(survivors.length).toBe(2);
    // Everyone hears the three others.
    await waitFor('every participant receives three audio tracks', () => names.every((n) => audioTracks(clients.get(n)!).size === 3), {
      timeoutMs: 20_000,
    });

    // The survivors count each other's audible 10 ms frames, sampled every 100 ms.
    const [s1, s2] = survivors as [string, string];
    const counters = [
      countAudibleFrames(audioTracks(clients.get(s1)!).get(s2)!),
      countAudibleFrames(audioTracks(clients.get(s2)!).get(s1)!),
    ];
    scene.onEnd(async () => {
      for (const c of counters) await c.stop();
    });
    await waitFor('survivors hear each other', () => counters.every((c) => c.count > 50), { timeoutMs: 10_000 });
    const samples: { at: number; counts: number[] }[] = [];
    const sampler = setInterval(() => samples.push({ at: performance.now(), counts: counters.map((c) => c.count) }), 100);
    scene.onEnd(async () => clearInterval(sampler));
    await waitFor('a second of samples before the kill', () => samples.length >= 10);

    const sidsBefore = new Map(onDoomed.map((n) => [n, clients.get(n)!.room.localParticipant!.sid!]));
    const restartsBefore = pool.workers()[doomed]!.restarts;
    await pool.terminate(doomed);
    await waitFor('the slot was replaced', () => pool.workers()[doomed]!.restarts === restartsBefore + 1);

    // The killed worker's participants come back (leave with RECONNECT) and hear all three again.
    const tracksOf = (name: string) => audioTracks(clients.get(name)!);
    await waitFor(
      'the reconnected participants hear everyone, and everyone hears them',
      () =>
        names.every((n) => {
          const t = tracksOf(n);
          return t.size === 3 && names.every((o) => o === n || t.has(o));
        }) && onDoomed.every((n) => pool.workerOf(clients.get(n)!.room.localParticipant!.sid!) !== undefined),
      { timeoutMs: 30_000, intervalMs: 200 },
    );
    for (const n of onDoomed) {
      // A new session, on the replacement worker or the other one.
      expect(clients.get(n)!.room.localParticipant!.sid).not.toBe(sidsBefore.get(n));
      const others = tracksOf(n);
      const heard = await clients.get(n)!.collectAudio(others.get(survivors[0]!)!, 24_000);
      expect(Math.abs(dominantFrequency(heard.subarray(12_000)) - tones[survivors[0]!]!)).toBeLessThan(15);
    }
    clearInterval(sampler);

    // The survivors never stopped: in every second from before the kill to now, each heard at
    // least 80 of the other's 100 frames.
    let worst = Number.POSITIVE_INFINITY;
    for (let i = 0; i + 10 < samples.length; i++) {
      for (let k = 0; k < counters.length; k++) worst = Math.min(worst, samples[i + 10]!.counts[k]! - samples[i]!.counts[k]!);
    }
    expect(samples.length).toBeGreaterThan(20);
    expect(worst).toBeGreaterThanOrEqual(80);
  });

  it('a stuck worker does not stall the others, and is replaced once it stops answering pings', async () => {
    const channel = `stall-${process.pid}-${Date.now()}`;
    const control = new BroadcastChannel(channel);
    scene.onEnd(async () => control.close());
    const sfu = await scene.start({ workers: 2, workerPlacement: 'spread', workerHooks: { module: STALL_HOOKS, data: { channel } } });
    const pool = sfu.sfu.mediaWorkers!;
    const alice = await scene.connect('alice'); // worker 0
    const bob = await scene.connect('bob'); // worker 1
    const carol = await scene.connect('carol'); // worker 0
    const workerOf = (c: RtcNodeClient) => pool.workerOf(c.room.localParticipant!.sid!);
    expect([workerOf(alice), workerOf(bob), workerOf(carol)]).toEqual([0, 1, 0]);
    await alice.publishTone(440);
    await waitFor('carol and bob receive alice', () => audioTracks(carol).has('alice') && audioTracks(bob).has('alice'), { timeoutMs: 15_000 });
    const atCarol = countAudibleFrames(audioTracks(carol).get('alice')!);
    scene.onEnd(() => atCarol.stop());
    await waitFor('carol hears alice', () => atCarol.count > 50, { timeoutMs: 10_000 });

    // Worker 1 (bob's) blocks its thread for longer than the pool's ping timeout.
    const restarts = pool.workers()[1]!.restarts;
    const bobSid = bob.room.localParticipant!.sid;
    const samples: number[] = [];
    const sampler = setInterval(() => samples.push(atCarol.count), 100);
    scene.onEnd(async () => clearInterval(sampler));
    // BroadcastChannel.postMessage has no target origin (the lint rule is about window.postMessage).
    const tell = control.postMessage.bind(control);
    tell({ worker: 1, ms: PING_TIMEOUT_MS + 3000 });
    await waitFor('the stuck worker is replaced', () => pool.workers()[1]!.restarts === restarts + 1, { timeoutMs: PING_TIMEOUT_MS + 10_000 });
    await waitFor('two more seconds of samples', () => samples.length >= 20 + (PING_TIMEOUT_MS / 100));
    clearInterval(sampler);
    // Carol, on the other worker, heard at least 80 of alice's 100 frames in every second.
    let worst = Number.POSITIVE_INFINITY;
    for (let i = 0; i + 10 < samples.length; i++) worst = Math.min(worst, samples[i + 10]! - samples[i]!);
    expect(worst).toBeGreaterThanOrEqual(80);
    // Bob came back in a new session and hears alice again.
    await waitFor('bob hears alice again', () => audioTracks(bob).has('alice') && workerOf(bob) !== undefined, { timeoutMs: 20_000 });
    expect(bob.room.localParticipant!.sid).not.toBe(bobSid);
    const heard = await bob.collectAudio(audioTracks(bob).get('alice')!, 24_000);
    expect(Math.abs(dominantFrequency(heard.subarray(12_000)) - 440)).toBeLessThan(15);
  });
});
