/**
 * VP8 video with rtc-node for the media tests: a moving I420 test pattern published at 30 fps,
 * and the subscriber's inbound-rtp loss-recovery figures.
 */
import { expect } from 'vitest';
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
  type RemoteTrack,
  type Room,
} from '@livekit/rtc-node';
import type { RtcNodeClient, RtcNodeScene } from './rtc-node.ts';
import type { TestSfu } from './sfu-harness.ts';
import { waitFor } from './wait.ts';

const WIDTH = 640;
const HEIGHT = 360;

/** Publishes a moving I420 test pattern at 30 fps; returns stop(). */
export async function publishVideo(room: Room): Promise<() => Promise<void>> {
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

export interface InboundVideo {
  nackCount: number;
  pliCount: number;
  packetsLost: number;
  packetsReceived: number;
  retransmittedPacketsReceived: number;
}

export async function inboundVideo(room: Room): Promise<InboundVideo | undefined> {
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


/** Counts the frames rtc-node decodes from a remote video track until `stop()`. */
export function countVideoFrames(track: RemoteTrack): { readonly count: number; stop(): Promise<void> } {
  let count = 0;
  const stream = new VideoStream(track);
  const reader = stream.getReader();
  const pump = (async () => {
    for (;;) {
      const next = await reader.read();
      if (next.done) return;
      count++;
    }
  })();
  return {
    get count() {
      return count;
    },
    async stop() {
      reader.releaseLock();
      await stream.cancel().catch(() => undefined);
      await pump.catch(() => undefined);
    },
  };
}

/**
 * Alice publishes video, bob subscribes, while something drops about 5 % of bob's video
 * (`dropped()` counts the drops): the SFU answers bob's NACKs from its cache, bob gets the
 * packets back as RTX, keeps decoding, and asks for at most two keyframes.
 */
export async function expectNackRecovery(scene: RtcNodeScene, sfu: TestSfu, alice: RtcNodeClient, bob: RtcNodeClient, dropped: () => number): Promise<void> {
  scene.onEnd(await publishVideo(alice.room));

  const [track] = await bob.waitForEvent('trackSubscribed', (t) => t.kind === TrackKind.KIND_VIDEO, 15_000);
  const frames = countVideoFrames(track);
  scene.onEnd(() => frames.stop());

  const room = sfu.sfu.rooms.getRoom('test-room')!;
  const bobState = room.participants.get('bob' as never)!;
  const stats = () => [...bobState.subscriptions.values()].find((s) => s.track.info.type === 1)?.down.stats();

  // The SFU answered bob's NACKs for at least 40 dropped packets.
  const server = await waitFor(
    'retransmissions for bob',
    () => {
      const s = stats();
      return s && dropped() >= 40 && s.packetsRetransmitted >= 40 ? s : undefined;
    },
    { timeoutMs: 30_000, intervalMs: 100 },
  );
  expect(server.nacksReceived).toBeGreaterThan(0);
  // Nearly every drop was recovered from the cache (a few may be NACKed after they aged out).
  expect(server.packetsRetransmitted).toBeGreaterThanOrEqual(Math.floor(dropped() * 0.8));

  // Bob's side: it NACKed the drops, and they came back as retransmissions.
  const droppedNow = dropped();
  const client = await waitFor('bob inbound-rtp stats with recovered packets', async () => {
    const s = await inboundVideo(bob.room);
    return s && s.nackCount > 0 && s.retransmittedPacketsReceived >= Math.floor(droppedNow * 0.8) ? s : undefined;
  });
  // Nothing but the dropped packets went missing, and no drop broke a picture for good.
  expect(client.packetsLost).toBeLessThanOrEqual(dropped());
  expect(client.pliCount).toBeLessThanOrEqual(2);
  // The SFU found (nearly) every NACKed packet in its cache.
  expect(stats()!.retransmitMisses).toBeLessThanOrEqual(Math.ceil(dropped() / 10));

  // And bob keeps decoding.
  const before = frames.count;
  await waitFor('bob decodes more frames', () => frames.count >= before + 30, { timeoutMs: 10_000 });
}
