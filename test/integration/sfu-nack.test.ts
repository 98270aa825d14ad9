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
import { TrackKind } from '@livekit/rtc-node';
import { rtcNodeScene } from '../support/rtc-node.ts';
import { countVideoFrames, inboundVideo, publishVideo } from '../support/rtc-node-video.ts';
import { waitFor } from '../support/wait.ts';

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
    const before = frames.count;
    await waitFor('bob decodes more frames', () => frames.count >= before + 30, { timeoutMs: 10_000 });
  });
});
