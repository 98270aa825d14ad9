/**
 * Congestion-control feedback with real Chrome (livekit-client): the SFU answers a simulcast
 * publisher with transport-wide CC feedback (sfu/media/twcc.ts), so Chrome's bandwidth estimate
 * grows and its encoder adds the high layer (rid f) of a 720p camera, which it never does
 * without feedback (it stays at q and h). Towards subscribers the SFU learns each one's downlink
 * estimate from REMB (Chrome sends it for the goog-remb + abs-send-time we offer) and caps the
 * layers it forwards by it: a real werift subscriber that reports a low estimate gets the low
 * layer although its settings ask for the high one, and the high one again when the estimate
 * rises.
 */
import { afterEach, describe, expect, it } from 'vitest';
import type { Page } from 'playwright-core';
import { joinFromPage, browserScene, publisherVideoStats } from './sfu-browser-client.ts';
import { waitFor } from '../support/wait.ts';
import { Upstream } from '../../sfu/media/upstream.ts';
import { ReceiverEstimatedMaxBitrate, RtcpPayloadSpecificFeedback } from 'werift';
import { WeriftLkClient } from '../../bench/_sfu-werift-client.ts';
import type { PublishedTrack } from '../../sfu/rtc/participant.ts';
import type { Room } from '../../sfu/rtc/room.ts';

/** Publishes a 720p simulcast camera from the page. */
export async function publishSimulcast720(page: Page): Promise<void> {
  await page.evaluate(async () => {
    const LK = window.LivekitClient;
    const room = window.testState.room as InstanceType<typeof LK.Room>;
    const track = await LK.createLocalVideoTrack({ resolution: LK.VideoPresets.h720.resolution });
    await room.localParticipant.publishTrack(track, { simulcast: true });
  });
}

describe('sfu bandwidth feedback to publishers', () => {
  const scene = browserScene();
  afterEach((ctx) => scene.end(ctx.task.result?.state === 'fail'));

  it('a 720p simulcast publisher ramps up and sends the high layer (rid f) to the SFU; a Chrome subscriber reports its downlink estimate', async () => {
    // In-process media (also under SFU_TEST_WORKERS): the test reads the Upstream's per-layer
    // bitrates, which a media worker's RemoteUpstream proxy does not carry to the main thread.
    const sfu = await scene.start({ workers: 1 });
    const alice = await scene.page();
    const bob = await scene.page();
    await joinFromPage(alice.page, sfu.wsUrl, await sfu.token('alice'));
    await joinFromPage(bob.page, sfu.wsUrl, await sfu.token('bob'));
    await publishSimulcast720(alice.page);

    const room = sfu.sfu.rooms.getRoom('test-room')!;
    const video = await publishedVideo(room, 'alice');
    const layers = (video.upstream as Upstream).layers;
    const f = await waitFor(
      'the SFU receiving the f layer',
      () => layers.find((l) => l.rid === 'f' && l.bitrate > 0 && Date.now() - l.lastSeen < 1000),
      { timeoutMs: 25_000, intervalMs: 100 },
    );
    // Chrome's receive-side estimator answers the subscriber PC with REMB.
    const bobDown = await waitFor('bob subscribed to alice video', () =>
      room.participants.get('bob' as never)?.subscriptions.get(video.info.sid as never)?.down,
    );
    const bobEstimate = await waitFor('a REMB estimate from bob', () => (bobDown.stats().availableBandwidth ?? 0) > 0 && bobDown.stats().availableBandwidth, {
      timeoutMs: 10_000,
      intervalMs: 100,
    });
    expect(bobEstimate).toBeGreaterThan(0);
    expect(f.bitrate).toBeGreaterThan(0);
    const stats = await publisherVideoStats(alice.page);
    expect(stats.rids.f?.packetsSent ?? 0).toBeGreaterThan(0);
    // Chrome's estimate is fed by our feedback (it starts at 300 kbps without any).
    expect(stats.availableOutgoingBitrate).toBeGreaterThan(300_000);
    console.info(
      'publisher estimate',
      stats.availableOutgoingBitrate,
      'layers',
      layers.map((l) => `${l.rid}:${l.bitrate}`).join(' '),
      'bob REMB',
      bobEstimate,
    );
  });

  it('caps a werift subscriber to the low layer while its REMB estimate is low and lifts the cap when it rises', async () => {
    // In-process media (also under SFU_TEST_WORKERS): the test reads the Upstream's per-layer
    // bitrates, which a media worker's RemoteUpstream proxy does not carry to the main thread.
    const sfu = await scene.start({ workers: 1 });
    const alice = await scene.page();
    await joinFromPage(alice.page, sfu.wsUrl, await sfu.token('alice'));
    await publishSimulcast720(alice.page);
    const room = sfu.sfu.rooms.getRoom('test-room')!;
    const video = await publishedVideo(room, 'alice');
    const layers = (video.upstream as Upstream).layers;
    await waitFor('all three layers arriving', () => ['q', 'h', 'f'].every((rid) => layers.some((l) => l.rid === rid && l.bitrate > 0)), {
      timeoutMs: 25_000,
      intervalMs: 100,
    });

    // carol asks for the full size (UpdateTrackSettings → HIGH) and reports a downlink estimate by REMB.
    let videoSsrc: number | undefined;
    let videoPackets = 0;
    const carol = await WeriftLkClient.connect(sfu.wsUrl, await sfu.token('carol'), {
      portRange: [52000, 52999],
      videoSize: { width: 1280, height: 720 },
      onRtp: (rtp, kind) => {
        if (kind !== 'video') return;
        videoSsrc = rtp.header.ssrc;
        videoPackets++;
      },
    });
    let estimate: number | undefined;
    const timer = setInterval(() => {
      const transceiver = carol.sub.getTransceivers().find((t) => t.kind === 'video');
      const dtls = transceiver?.receiver.dtlsTransport;
      if (estimate === undefined || videoSsrc === undefined || !dtls) return;
      dtls.sendRtcp([rembPacket(transceiver.receiver.rtcpSsrc, videoSsrc, estimate)]).catch(() => undefined);
    }, 200);
    try {
      const down = await waitFor('carol subscribed to alice video', () =>
        room.participants.get('carol' as never)?.subscriptions.get(video.info.sid as never)?.down,
      );
      // No estimate yet: the layer her settings allow.
      await waitFor('carol receiving f', () => down.stats().layer === 'f', { timeoutMs: 15_000, intervalMs: 50 });

      const q = layers.find((l) => l.rid === 'q')!;
      estimate = Math.max(20_000, Math.round(q.bitrate / 2)); // below even q: the lowest layer
      await waitFor('carol capped to q', () => down.stats().layer === 'q' && down.stats().availableBandwidth === estimate, {
        timeoutMs: 10_000,
        intervalMs: 50,
      });
      const atLow = videoPackets;
      await waitFor('carol decoding on at q', () => videoPackets > atLow + 30 && down.stats().layer === 'q', { timeoutMs: 10_000 });

      estimate = 20_000_000;
      await waitFor('carol back on f', () => down.stats().layer === 'f', { timeoutMs: 15_000, intervalMs: 50 });
      const atHigh = videoPackets;
      await waitFor('packets keep coming on f', () => videoPackets > atHigh + 30, { timeoutMs: 10_000 });
      expect(down.stats().availableBandwidth).toBe(20_000_000);
    } finally {
      clearInterval(timer);
      await carol.close();
    }
  });
});

async function publishedVideo(room: Room, identity: string): Promise<PublishedTrack> {
  const participant = room.participants.get(identity as never)!;
  const video = await waitFor(`${identity} video published`, () =>
    [...participant.published.values()].find((t) => t.info.mimeType === 'video/VP8'),
  );
  expect(video.upstream).toBeInstanceOf(Upstream);
  return video;
}

/** A REMB (draft-alvestrand-rmcat-remb) for `bps`, as a receiver's RTCP. */
function rembPacket(senderSsrc: number, mediaSsrc: number, bps: number): RtcpPayloadSpecificFeedback {
  let brExp = 0;
  let mantissa = Math.floor(bps);
  while (mantissa >= 1 << 18) {
    mantissa = Math.floor(mantissa / 2);
    brExp++;
  }
  return new RtcpPayloadSpecificFeedback({
    feedback: new ReceiverEstimatedMaxBitrate({
      senderSsrc,
      mediaSsrc: 0,
      uniqueID: 'REMB',
      ssrcNum: 1,
      brExp,
      brMantissa: mantissa,
      ssrcFeedbacks: [mediaSsrc],
    }),
  });
}
