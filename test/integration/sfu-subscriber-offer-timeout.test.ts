/**
 * A subscriber that stops answering the SFU's offers (issue 13: it "silently stops getting new
 * tracks"): its first offer is answered and its transport connects, then a track is published
 * and the renegotiation offer goes unanswered; after LiveKit's 15 s negotiation timeout the
 * participant is told to reconnect (leave RECONNECT), which gives it a fresh session with every
 * track. The subscriber is a werift peer connection driven over raw signalling, so it can stop
 * answering; the publisher is @livekit/rtc-node.
 */
import { afterEach, describe, expect, it } from 'vitest';
import WebSocket from 'ws';
import { RTCPeerConnection } from 'werift';
import { LeaveRequest_Action, SessionDescription, SignalRequest, SignalResponse } from '@livekit/protocol';
import { createManualClock } from '../../common/clock.ts';
import { NEGOTIATION_TIMEOUT_MS } from '../../sfu/media/transport.ts';
import { rtcNodeScene } from '../support/rtc-node.ts';
import { waitFor } from '../support/wait.ts';

describe('sfu subscriber that stops answering offers', () => {
  const scene = rtcNodeScene();
  const cleanups: (() => Promise<void> | void)[] = [];
  afterEach(async () => {
    for (const c of cleanups.splice(0).toReversed()) await c();
    await scene.end();
  });

  it('is told to reconnect 15 s after an unanswered renegotiation offer', async () => {
    const clock = createManualClock(Date.now());
    const sfu = await scene.start({ portRange: [31260, 31269], clock });
    const token = await sfu.token('quiet');
    const ws = new WebSocket(`${sfu.wsUrl}/rtc?access_token=${encodeURIComponent(token)}&protocol=16&sdk=js&version=2.23.0`);
    cleanups.push(() => ws.close());
    const messages: SignalResponse[] = [];
    ws.on('message', (data: Buffer) => messages.push(SignalResponse.fromBinary(new Uint8Array(data))));
    await new Promise<void>((resolve, reject) => {
      ws.once('open', () => resolve());
      ws.once('error', reject);
    });
    const pc = new RTCPeerConnection({ iceServers: [] });
    cleanups.push(() => pc.close());
    const offers = () => messages.filter((m) => m.message.case === 'offer');

    // Answers the first offer only.
    const first = await waitFor('the first subscriber offer', () => offers()[0]);
    if (first.message.case !== 'offer') throw new Error('unreachable');
    await pc.setRemoteDescription({ type: 'offer', sdp: first.message.value.sdp });
    await pc.setLocalDescription(await pc.createAnswer());
    ws.send(
      new SignalRequest({
        message: {
          case: 'answer',
          value: new SessionDescription({ type: 'answer', sdp: pc.localDescription!.sdp, id: first.message.value.id }),
        },
      }).toBinary(),
    );
    await waitFor('the subscriber transport connected', () => pc.connectionState === 'connected', { timeoutMs: 10_000 });

    // A track appears: the SFU renegotiates, and this subscriber does not answer any more.
    const alice = await scene.connect('alice');
    await alice.publishTone(440);
    await waitFor('the renegotiation offer', () => offers().length >= 2, { timeoutMs: 10_000 });
    clock.advance(NEGOTIATION_TIMEOUT_MS - 1000);
    expect(messages.some((m) => m.message.case === 'leave')).toBe(false);
    clock.advance(1000);
    const leave = await waitFor('a leave', () => messages.find((m) => m.message.case === 'leave'), { timeoutMs: 3000 });
    expect(leave.message.case === 'leave' && leave.message.value.action).toBe(LeaveRequest_Action.RECONNECT);
    expect(NEGOTIATION_TIMEOUT_MS).toBe(15_000);
  });
});
