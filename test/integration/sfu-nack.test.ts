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
import { afterEach, describe, it } from 'vitest';
import { rtcNodeScene } from '../support/rtc-node.ts';
import { expectNackRecovery } from '../support/rtc-node-video.ts';

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
    await expectNackRecovery(scene, sfu, alice, bob, () => dropped);
  });
});
