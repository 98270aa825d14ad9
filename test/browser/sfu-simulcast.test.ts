/**
 * Simulcast layer selection with the real livekit-client: alice publishes a 1280x720 camera
 * with simulcast (rids q/h/f, as many as Chrome sends), bob subscribes with adaptiveStream and
 * dynacast. Shrinking bob's video element makes the SFU forward the low layer; growing it back
 * brings the high layer; each within 3 s, measured by the frame width bob decodes (inbound-rtp
 * frameWidth), with the decoder never complaining (frames keep being decoded, no PLI storm of
 * a broken stream, no keyframe-less switch). The publisher is told which layers anyone
 * receives (SubscribedQualityUpdate, dynacast).
 */
import { afterEach, describe, expect, it } from 'vitest';
import type { Page } from 'playwright-core';
import { joinFromPage, browserScene, inboundVideoStats, sizeVideoElements, waitForPageEvent, type InboundVideo } from './sfu-browser-client.ts';
import { waitFor } from '../support/wait.ts';
import { workersOf } from '../support/sfu-harness.ts';

/** The one remote video bob receives. */
async function videoIn(page: Page): Promise<InboundVideo | undefined> {
  return (await inboundVideoStats(page))[0];
}

describe('sfu simulcast with adaptive stream', () => {
  const scene = browserScene();
  afterEach((ctx) => scene.end(ctx.task.result?.state === 'fail'));

  it('forwards the low layer to a shrunk video element and the high layer again when it grows, each within 3 s', async () => {
    const sfu = await scene.start();
    const alice = await scene.page();
    const bob = await scene.page();
    await joinFromPage(alice.page, sfu.wsUrl, await sfu.token('alice'), { dynacast: true });
    await joinFromPage(bob.page, sfu.wsUrl, await sfu.token('bob'), { adaptiveStream: true, dynacast: true });
    await alice.page.evaluate(async () => {
      const LK = window.LivekitClient;
      const room = window.testState.room as InstanceType<typeof LK.Room>;
      const track = await LK.createLocalVideoTrack({ resolution: LK.VideoPresets.h720.resolution });
      await room.localParticipant.publishTrack(track, { simulcast: true });
    });
    await waitForPageEvent(bob.page, (e) => e.type === 'trackSubscribed' && e.kind === 'video', 'video subscribed at bob');
    await sizeVideoElements(bob.page, 1280, 720);

    const room = sfu.sfu.rooms.getRoom('test-room')!;
    const aliceState = room.participants.get('alice' as never)!;
    const video = await waitFor('alice video published', () =>
      [...aliceState.published.values()].find((t) => t.info.mimeType === 'video/VP8'),
    );
    // In the media-workers pass, alice and bob are on different workers: the layers cross a relay.
    const placed = workersOf(sfu, 'test-room', ['alice', 'bob']);
    if (placed) expect(new Set(placed).size, `workers of alice, bob: ${placed.join(', ')}`).toBe(2);
    const layerWidths = new Map(video.info.layers.map((l) => [l.quality, l.width]));
    expect(video.info.simulcast).toBe(true);
    const lowWidth = layerWidths.get(0)!;
    expect(lowWidth).toBeGreaterThan(0);

    // Big element: bob decodes a layer above the low one.
    const big = await waitFor('bob decodes a large layer', async () => {
      const v = await videoIn(bob.page);
      return v && v.framesDecoded > 10 && v.frameWidth > lowWidth ? v : undefined;
    }, { timeoutMs: 20_000, intervalMs: 100 });
    const highWidth = big.frameWidth;

    // Shrink: the low layer within 3 s.
    await sizeVideoElements(bob.page, 160, 90);
    const small = await waitFor('bob decodes the low layer', async () => {
      const v = await videoIn(bob.page);
      return v && v.frameWidth === lowWidth ? v : undefined;
    }, { timeoutMs: 3000, intervalMs: 50 });

    // Grow back: the high layer within 3 s.
    await sizeVideoElements(bob.page, 1280, 720);
    const grown = await waitFor('bob decodes the high layer again', async () => {
      const v = await videoIn(bob.page);
      return v && v.frameWidth >= highWidth ? v : undefined;
    }, { timeoutMs: 3000, intervalMs: 50 });

    // The decoder kept going: more frames after each switch, each switch started at a keyframe.
    await waitFor('decoding continues on the high layer', async () => {
      const v = await videoIn(bob.page);
      return v && v.framesDecoded >= grown.framesDecoded + 15 && v.frameWidth >= highWidth;
    });
    expect(small.framesDecoded).toBeGreaterThan(big.framesDecoded);
    const end = (await videoIn(bob.page))!;
    // A stream the decoder could not follow makes it ask for keyframes again and again.
    expect(end.pliCount).toBeLessThan(10);
    const bobState = room.participants.get('bob' as never)!;
    const sub = bobState.subscriptions.get(video.info.sid as never)!;
    expect(sub.down.stats().layerSwitches).toBeGreaterThanOrEqual(3);
  });
});
