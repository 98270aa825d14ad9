/**
 * A livekit-client browser and an @livekit/rtc-node participant join one room through different
 * SFU nodes of a two-node cluster on a real redis-server: each sees the other's video (the
 * browser decodes the rtc-node test pattern, rtc-node receives the browser's camera frames)
 * and the browser receives the rtc-node tone. One of the two is relayed; neither SDK notices.
 */
import { afterEach, describe, expect, it } from 'vitest';
import { LocalVideoTrack, TrackKind, TrackPublishOptions, TrackSource, VideoBufferType, VideoCodec, VideoFrame, VideoSource, VideoStream } from '@livekit/rtc-node';
import { joinFromPage, leaveFromPage, publishCameraAndMic, waitForMediaFrom } from './sfu-browser-client.ts';
import { openBrowserPage, type BrowserPage } from '../support/browser.ts';
import { startClusterScene, type ClusterScene } from '../support/sfu-cluster.ts';
import type { SfuNodeProcess } from '../support/sfu-node-process.ts';
import { waitFor } from '../support/wait.ts';

const WIDTH = 320;
const HEIGHT = 240;

describe('sfu cluster with a livekit-client browser', () => {
  let scene: ClusterScene | undefined;
  let page: BrowserPage | undefined;
  const stops: (() => Promise<void>)[] = [];
  afterEach(async (ctx) => {
    if (ctx.task.result?.state === 'fail' && page) console.log(page.consoleLines.slice(-40).join('\n'));
    for (const stop of stops.splice(0).toReversed()) await stop();
    if (page) {
      await leaveFromPage(page.page).catch(() => undefined);
      await page.close();
    }
    page = undefined;
    await scene?.end();
    scene = undefined;
  });

  it('a browser on one node and rtc-node on the other see each other\'s video', async () => {
    scene = await startClusterScene({ nodes: 2 });
    const [a, b] = scene.nodes as [SfuNodeProcess, SfuNodeProcess];
    page = await openBrowserPage();
    await joinFromPage(page.page, a.wsUrl, await scene.token('browser', 'mixed'));
    await publishCameraAndMic(page.page);

    const rtc = await scene.connect(b.wsUrl, 'rtc', 'mixed');
    await rtc.publishTone(440);
    const source = new VideoSource(WIDTH, HEIGHT);
    await rtc.room.localParticipant!.publishTrack(
      LocalVideoTrack.createVideoTrack('camera', source),
      new TrackPublishOptions({ source: TrackSource.SOURCE_CAMERA, simulcast: false, videoCodec: VideoCodec.VP8 }),
    );
    const data = new Uint8Array((WIDTH * HEIGHT * 3) / 2);
    let n = 0;
    const timer = setInterval(() => {
      n++;
      for (let i = 0; i < WIDTH * HEIGHT; i++) data[i] = (i * 7 + n * 13) & 0xff;
      data.fill(128, WIDTH * HEIGHT);
      source.captureFrame(new VideoFrame(data, WIDTH, HEIGHT, VideoBufferType.I420));
    }, 33);
    stops.push(async () => {
      clearInterval(timer);
      await source.close().catch(() => undefined);
    });

    // The browser decodes rtc-node's video and receives its audio.
    const stats = await waitForMediaFrom(page.page, 'rtc', 20_000);
    expect(stats.find((s) => s.kind === 'video')!.framesDecoded).toBeGreaterThanOrEqual(10);

    // rtc-node receives the browser's camera.
    // (Subscribed already, most likely: the browser published before rtc-node joined.)
    const browser = [...rtc.room.remoteParticipants.values()].find((p) => p.identity === 'browser');
    const subscribed = [...(browser?.trackPublications.values() ?? [])].find((pub) => pub.track?.kind === TrackKind.KIND_VIDEO)?.track;
    const track =
      subscribed ??
      (await rtc.waitForEvent('trackSubscribed', (t, _pub, p) => t.kind === TrackKind.KIND_VIDEO && p.identity === 'browser', 20_000))[0];
    const stream = new VideoStream(track);
    const reader = stream.getReader();
    let frames = 0;
    const pump = (async () => {
      for (;;) {
        const next = await reader.read();
        if (next.done) return;
        frames++;
      }
    })();
    stops.push(async () => {
      reader.releaseLock();
      await stream.cancel().catch(() => undefined);
      await pump.catch(() => undefined);
    });
    await waitFor('10 browser video frames at rtc-node', () => frames >= 10, { timeoutMs: 20_000 });

    for (const node of [a, b]) {
      expect((await scene.api(node).listParticipants('mixed')).map((p) => p.identity).toSorted()).toEqual(['browser', 'rtc']);
    }
  });
});
