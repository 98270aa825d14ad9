/**
 * livekit-client browsers in a two-node SFU cluster on a real redis-server:
 * - a browser and an @livekit/rtc-node participant join one room through different nodes and
 *   each sees the other's video (one of them is relayed; neither SDK notices);
 * - browsers forced to use TURN only (iceTransportPolicy relay) complete a call through Debian's
 *   coturn with the per-participant credentials the hosting node mints (rtc.turn_servers
 *   `secret`), once with the room on each node.
 */
import { afterEach, describe, expect, it } from 'vitest';
import { LocalVideoTrack, TrackKind, TrackPublishOptions, TrackSource, VideoBufferType, VideoCodec, VideoFrame, VideoSource, VideoStream } from '@livekit/rtc-node';
import { joinFromPage, leaveFromPage, publishCameraAndMic, waitForMediaFrom } from './sfu-browser-client.ts';
import { openBrowserPage, type BrowserPage } from '../support/browser.ts';
import { startClusterScene, type ClusterScene } from '../support/sfu-cluster.ts';
import type { SfuNodeProcess } from '../support/sfu-node-process.ts';
import { waitFor } from '../support/wait.ts';
import { startCoturn } from '../support/coturn.ts';
import { createRedisConnection } from '../../common/redis.ts';
import { createSilentLogger } from '../../common/logger.ts';
import { ROOM_NODE_KEY } from '../../sfu/routing/redis-router.ts';

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

  it('browsers forced to relay (iceTransportPolicy relay) call through coturn with the TURN credentials every node mints', { timeout: 120_000 }, async () => {
    const coturn = await startCoturn({ relayMinPort: 49_300, relayMaxPort: 49_399 });
    stops.push(() => coturn.stop());
    // Each node places the rooms it is asked for first on itself (its own region is nearest),
    // so the two rooms below are hosted one on each node.
    const regions = [
      { name: 'a', lat: 0, lon: 0 },
      { name: 'b', lat: 50, lon: 50 },
    ];
    scene = await startClusterScene({ nodes: 0 });
    const turn = { port: coturn.port, secret: coturn.secret };
    const selector = (region: string) => ({ region, node_selector: { kind: 'regionaware', sysload_limit: 1000, regions } });
    const a = await scene.addNode({ turn, extra: selector('a') });
    const b = await scene.addNode({ turn, extra: selector('b') });

    for (const [host, other] of [[a, b], [b, a]] as const) {
      const room = `turn-${host === a ? 'a' : 'b'}`;
      const first = await openBrowserPage();
      const second = await openBrowserPage();
      stops.push(async () => {
        for (const p of [first, second]) {
          await leaveFromPage(p.page).catch(() => undefined);
          await p.close();
        }
      });
      await joinFromPage(first.page, host.wsUrl, await scene.token('first', room), { iceTransportPolicy: 'relay' });
      await joinFromPage(second.page, other.wsUrl, await scene.token('second', room), { iceTransportPolicy: 'relay' });
      await Promise.all([publishCameraAndMic(first.page), publishCameraAndMic(second.page)]);
      await Promise.all([waitForMediaFrom(first.page, 'second', 30_000), waitForMediaFrom(second.page, 'first', 30_000)]);
      const redis = createRedisConnection({ address: `127.0.0.1:${scene.redis.port}` }, createSilentLogger());
      expect(await redis.hget(ROOM_NODE_KEY, room)).toBe(host.nodeId);
      redis.disconnect();
    }
    // Only relay candidates were allowed: every peer connection of the four browsers allocated on coturn.
    expect(coturn.allocations()).toBeGreaterThanOrEqual(4);
  });
});
