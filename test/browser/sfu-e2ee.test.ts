/**
 * End-to-end encryption through the SFU with the real livekit-client E2EE (bundled worker):
 * with the same key both participants decode each other's video; with different keys the
 * receiver decodes nothing and reports decryption errors; and the SFU hands subscribers exactly
 * the encrypted payload bytes the publisher sent (observed with a payload tap on the forwarder).
 * Only the VP8 payload descriptor in front of the frame may differ: after a simulcast layer
 * switch the SFU renumbers its picture ids (it is outside the encrypted frame).
 */
import { afterEach, describe, expect, it } from 'vitest';
import { e2eeWorkerUrl } from '../support/browser.ts';
import { newVp8Descriptor, parseVp8Descriptor } from '../../sfu/media/vp8.ts';
import {
  joinFromPage,
  browserScene,
  publishCameraAndMic,
  receivedStats,
  waitForMediaFrom,
  waitForPageEvent,
} from './sfu-browser-client.ts';
import { waitFor } from '../support/wait.ts';

describe('sfu with livekit-client E2EE', () => {
  const scene = browserScene();
  afterEach((ctx) => scene.end(ctx.task.result?.state === 'fail'));

  async function twoParticipants(aliceKey: string, bobKey: string) {
    const alice = await scene.page();
    const bob = await scene.page();
    const workerUrl = e2eeWorkerUrl();
    await joinFromPage(alice.page, scene.sfu.wsUrl, await scene.sfu.token('alice'), { e2eeKey: aliceKey, workerUrl });
    await joinFromPage(bob.page, scene.sfu.wsUrl, await scene.sfu.token('bob'), { e2eeKey: bobKey, workerUrl });
    return { alice, bob };
  }

  it('decodes each other with the same key, and forwards the encrypted payload bytes unchanged', async () => {
    const inbound = new Set<string>();
    const desc = newVp8Descriptor();
    /** The VP8 frame bytes (E2EE: the encrypted frame), without the RTP payload descriptor. */
    const frameBytes = (payload: Buffer) => (parseVp8Descriptor(payload, desc) ? payload.subarray(desc.size) : payload);
    const outbound: { payload: Buffer; marker: boolean }[] = [];
    const sfu = await scene.start({
      tap: (e) => {
        if (e.kind !== 'video') return;
        if (e.direction === 'in') inbound.add(frameBytes(e.payload).toString('hex'));
        else if (outbound.length < 400) outbound.push({ payload: Buffer.from(e.payload), marker: e.marker });
      },
    });
    const { alice, bob } = await twoParticipants('shared passphrase', 'shared passphrase');
    await Promise.all([publishCameraAndMic(alice.page), publishCameraAndMic(bob.page)]);
    await Promise.all([waitForMediaFrom(alice.page, 'bob', 15_000), waitForMediaFrom(bob.page, 'alice', 15_000)]);

    // TrackInfo tells receivers the track is encrypted (and its mime type).
    const info = sfu.sfu.rooms.getRoom('test-room')!.participants.get('alice' as never)!;
    const video = [...info.published.values()].find((t) => t.info.mimeType === 'video/VP8');
    expect(video?.info.encryption).toBe(1);

    // Every frame payload the SFU sent out is byte-identical to one it received.
    await waitFor('forwarded video packets', () => outbound.length >= 200);
    for (const out of outbound) expect(inbound.has(frameBytes(out.payload).toString('hex'))).toBe(true);
    // And they are E2EE frames: the last packet of a frame ends with [IV length 12][key index].
    const frameEnds = outbound.filter((o) => o.marker);
    expect(frameEnds.length).toBeGreaterThan(10);
    for (const end of frameEnds) expect(end.payload[end.payload.length - 2]).toBe(12);
  });

  it('decodes nothing and reports decryption errors when the keys differ', async () => {
    await scene.start();
    const { alice, bob } = await twoParticipants('alice key', 'a different key');
    await publishCameraAndMic(alice.page);
    await waitForPageEvent(bob.page, (e) => e.type === 'encryptionError', 'decryption error at bob', 15_000);
    // Media keeps arriving (so the SFU forwards it) but none of it decodes.
    const stats = await waitFor(
      'encrypted video packets at bob',
      async () => {
        const v = (await receivedStats(bob.page)).find((s) => s.identity === 'alice' && s.kind === 'video');
        return v && v.packetsReceived >= 100 ? v : undefined;
      },
      { timeoutMs: 15_000, intervalMs: 100 },
    );
    expect(stats.framesDecoded).toBe(0);
  });
});
