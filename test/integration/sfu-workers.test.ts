/**
 * Media workers (`workers: 2`, `worker_placement: spread`): a room whose participants sit on
 * different worker threads, with real rtc-node clients. Each published track crosses the relay
 * ring to the other worker once; the tests prove where each participant landed
 * (`mediaWorkers.workerOf`) and that media flows across.
 */
import { afterEach, describe, expect, it } from 'vitest';
import { TrackKind } from '@livekit/rtc-node';
import { rtcNodeScene, dominantFrequency } from '../support/rtc-node.ts';

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

    await alice.publishTone(440);
    await bob.publishTone(660);
    const [atBob] = await bob.waitForEvent('trackSubscribed', (t) => t.kind === TrackKind.KIND_AUDIO, 15_000);
    const [atAlice] = await alice.waitForEvent('trackSubscribed', (t) => t.kind === TrackKind.KIND_AUDIO, 15_000);
    const heardByBob = await bob.collectAudio(atBob, 48_000);
    const heardByAlice = await alice.collectAudio(atAlice, 48_000);
    expect(Math.abs(dominantFrequency(heardByBob.subarray(24_000)) - 440)).toBeLessThan(15);
    expect(Math.abs(dominantFrequency(heardByAlice.subarray(24_000)) - 660)).toBeLessThan(15);
  });
});
