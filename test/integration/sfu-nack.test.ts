/**
 * Downlink loss recovery with real libwebrtc clients (@livekit/rtc-node): alice publishes VP8
 * video, bob subscribes, and the SFU's send-path test hook drops 5 % of the video packets on
 * their way to bob (every 20th, deterministic). Bob's NACKs are answered from the SFU's
 * per-track packet cache (RTX): the test counts the recovered packets on both sides, the SFU's
 * retransmission counter and bob's inbound-rtp nackCount / retransmittedPacketsReceived /
 * packetsLost (libwebrtc counts a packet recovered through RTX as lost on the media stream, so
 * packetsLost stays at the number dropped while the RTX count shows them coming back), and
 * checks bob keeps decoding without asking for keyframes.
 */
import { afterEach, describe, expect, it } from 'vitest';
import {
  LocalVideoTrack,
  TrackKind,
  TrackPublishOptions,
  TrackSource,
  VideoBufferType,
  VideoCodec,
  VideoFrame,
  VideoSource,
  VideoStream,
  type Room,
} from '@livekit/rtc-node';
import { rtcNodeScene } from '../support/rtc-node.ts';
import { waitFor } from '../support/wait.ts';

const WIDTH = 640;
const HEIGHT = 360;

/** Publishes a moving I420 test pattern at 30 fps; returns stop(). */
async function publishVideo(room: Room): Promise<() => Promise<void>> {
  const source = new VideoSource(WIDTH, HEIGHT);
  const track = LocalVideoTrack.createVideoTrack('camera', source);
  await room.localParticipant!.publishTrack(
    track,
    new TrackPublishOptions({ source: TrackSource.SOURCE_CAMERA, simulcast: false, videoCodec: VideoCodec.VP8 }),
  );
  const data = new Uint8Array((WIDTH * HEIGHT * 3) / 2);
  let n = 0;
  const timer = setInterval(() => {
    n++;
    // Luma noise plus a moving bar: enough detail for several packets per frame.
    for (let i = 0; i < WIDTH * HEIGHT; i++) data[i] = (i * 7 + n * 13 + ((i % WIDTH) >> 3 === n % 80 ? 200 : 0)) & 0xff;
    data.fill(128, WIDTH * HEIGHT);
    source.captureFrame(new VideoFrame(data, WIDTH, HEIGHT, VideoBufferType.I420));
  }, 33);
  return async () => {
    clearInterval(timer);
    await source.close().catch(() => undefined);
  };
}

interface InboundVideo {
  nackCount: number;
  pliCount: number;
  packetsLost: number;
  packetsReceived: number;
  retransmittedPacketsReceived: number;
}

async function inboundVideo(room: Room): Promise<InboundVideo | undefined> {
  const stats = await room.getRtcStats();
  for (const s of stats.subscriberStats) {
    if (s.stats.case !== 'inboundRtp') continue;
    const v = s.stats.value;
    if (v.stream?.kind !== 'video') continue;
    return {
      nackCount: v.inbound?.nackCount ?? 0,
      pliCount: v.inbound?.pliCount ?? 0,
      retransmittedPacketsReceived: Number(v.inbound?.retransmittedPacketsReceived ?? 0),
      packetsLost: Number(v.received?.packetsLost ?? 0),
      packetsReceived: Number(v.received?.packetsReceived ?? 0),
    };
  }
  return undefined;
}

describe('sfu NACK recovery with rtc-node', () => {
  const scene = rtcNodeScene();
  afterEach(() => scene.end());

  it("recovers the 5 % of video packets dropped on the way to a subscriber from the SFU's cache", async () => {
    let bobSid = '';
    let videoSeen = 0;
    let dropped = 0;
    const sfu = await scene.start({
      dropOutgoing: ({ subscriber, kind }) => {
        if (subscriber !== bobSid || kind !== 'video') return false;
        videoSeen++;
        if (videoSeen % 20 !== 0) return false;
        dropped++;
        return true;
      },
    });
    const alice = await scene.connect('alice');
    const bob = await scene.connect('bob');
    bobSid = bob.room.localParticipant!.sid!;
    scene.onEnd(await publishVideo(alice.room));

    const [track] = await bob.waitForEvent('trackSubscribed', (t) => t.kind === TrackKind.KIND_VIDEO, 15_000);
    let frames = 0;
    const stream = new VideoStream(track);
    const reader = stream.getReader();
    const pump = (async () => {
      for (;;) {
        const next = await reader.read();
        if (next.done) return;
        frames++;
      }
    })();
    scene.onEnd(async () => {
      reader.releaseLock();
      await stream.cancel().catch(() => undefined);
      await pump.catch(() => undefined);
    });

    const room = sfu.sfu.rooms.getRoom('test-room')!;
    const bobState = room.participants.get('bob' as never)!;
    const stats = () => [...bobState.subscriptions.values()].find((s) => s.track.info.type === 1)?.down.stats();

    // The SFU answered bob's NACKs for at least 40 dropped packets.
    const server = await waitFor(
      'retransmissions for bob',
      () => {
        const s = stats();
        return s && dropped >= 40 && s.packetsRetransmitted >= 40 ? s : undefined;
      },
      { timeoutMs: 30_000, intervalMs: 100 },
    );
    expect(server.nacksReceived).toBeGreaterThan(0);
    // Nearly every drop was recovered from the cache (a few may be NACKed after they aged out).
    expect(server.packetsRetransmitted).toBeGreaterThanOrEqual(Math.floor(dropped * 0.8));

    // Bob's side: it NACKed the drops, and they came back as retransmissions.
    const droppedNow = dropped;
    const client = await waitFor('bob inbound-rtp stats with recovered packets', async () => {
      const s = await inboundVideo(bob.room);
      return s && s.nackCount > 0 && s.retransmittedPacketsReceived >= Math.floor(droppedNow * 0.8) ? s : undefined;
    });
    // Nothing but the dropped packets went missing, and no drop broke a picture for good.
    expect(client.packetsLost).toBeLessThanOrEqual(dropped);
    expect(client.pliCount).toBeLessThanOrEqual(2);
    // The SFU found (nearly) every NACKed packet in its cache.
    expect(stats()!.retransmitMisses).toBeLessThanOrEqual(Math.ceil(dropped / 10));

    // And bob keeps decoding.
    const before = frames;
    await waitFor('bob decodes more frames', () => frames >= before + 30, { timeoutMs: 10_000 });
  });
});
