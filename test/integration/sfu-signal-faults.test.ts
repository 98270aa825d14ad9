/**
 * Faults on the signalling path stay with the one participant or socket that caused them: bad
 * trickled candidates are ignored with a rate-limited warning (never an error-level stack),
 * repeated candidates reach the transport once and distinct ones up to a cap, an exception in
 * one participant's handling closes that participant (logged once, counted on /metrics), and a
 * socket reset while its upgrade is being authenticated does not reach the process.
 */
import { afterEach, describe, expect, it } from 'vitest';
import { connect } from 'node:net';
import { LeaveRequest_Action, SignalRequest, SignalTarget, TrickleRequest } from '@livekit/protocol';
import { startTestSfu, type TestSfu } from '../support/sfu-harness.ts';
import { offerRequest, openRaw, rtcUrl, type RawClient } from '../support/raw-signal.ts';
import { captureLog } from '../support/log-capture.ts';
import { waitFor } from '../support/wait.ts';
import type { MediaTransportFactory, SignalTarget as Target } from '../../sfu/rtc/types.ts';

/** Counts candidates handed to the real transports, and throws on an offer carrying `a=x-throw`. */
function instrumented(calls: Record<Target, string[]>): (factory: MediaTransportFactory) => MediaTransportFactory {
  return (factory) => (opts) => {
    const real = factory(opts);
    return {
      start: () => real.start(),
      handleOffer: (sdp, id) => {
        if (sdp.includes('a=x-throw')) throw new Error('test double: offer handling failed');
        return real.handleOffer(sdp, id);
      },
      handleAnswer: (sdp, id) => real.handleAnswer(sdp, id),
      addCandidate: (target, init) => {
        calls[target].push(init.candidate);
        return real.addCandidate(target, init);
      },
      subscribe: (up, stream, track) => real.subscribe(up, stream, track),
      sendData: (kind, bytes) => real.sendData(kind, bytes),
      close: () => real.close(),
    };
  };
}

const trickle = (candidateInit: string, target = SignalTarget.PUBLISHER) =>
  new SignalRequest({ message: { case: 'trickle', value: new TrickleRequest({ candidateInit, target }) } });

const candidate = (port: number) =>
  JSON.stringify({ candidate: `candidate:1 1 udp 2122260223 127.0.0.9 ${port} typ host`, sdpMid: '0', sdpMLineIndex: 0 });

describe('sfu signal faults', () => {
  let sfu: TestSfu | undefined;
  const clients: RawClient[] = [];
  const join = async (identity: string) => {
    const c = await openRaw(rtcUrl(sfu!, await sfu!.token(identity)));
    clients.push(c);
    await c.next('join');
    return c;
  };

  afterEach(async () => {
    for (const c of clients.splice(0)) c.ws.terminate();
    await sfu?.stop();
    sfu = undefined;
  });

  it('ignores malformed trickle candidates with one warning per kind, never an error', async () => {
    const log = captureLog();
    sfu = await startTestSfu({ logger: log.logger });
    const alice = await join('alice');
    for (let i = 0; i < 20; i++) {
      for (const bad of ['null', '[]', '"text"', '{"candidate": 5}', 'not json']) alice.send(trickle(bad));
    }
    alice.send(new SignalRequest({ message: { case: 'ping', value: 1n } }));
    await alice.next('pong');
    expect(log.atLeast(50)).toEqual([]);
    const warnings = log.atLeast(40).filter((l) => l.msg.startsWith('ignored from client'));
    expect(warnings.length).toBeGreaterThan(0);
    expect(warnings.length).toBeLessThanOrEqual(4);
    expect(sfu.sfu.rooms.getRoom('test-room')?.participants.has('alice' as never)).toBe(true);
  });

  it('hands a repeated candidate to the transport once and distinct ones up to max_candidates_per_transport', async () => {
    const calls: Record<Target, string[]> = { publisher: [], subscriber: [] };
    sfu = await startTestSfu({
      wrapTransports: instrumented(calls),
      signal_limits: { message_burst: 5000, max_candidates_per_transport: 100 },
    });
    const alice = await join('alice');
    for (let i = 0; i < 500; i++) alice.send(trickle(candidate(5000)));
    for (let i = 0; i < 500; i++) alice.send(trickle(candidate(6000 + i), SignalTarget.SUBSCRIBER));
    alice.send(new SignalRequest({ message: { case: 'ping', value: 1n } }));
    await alice.next('pong');
    expect(calls.publisher).toHaveLength(1);
    expect(calls.subscriber).toHaveLength(100);
  });

  it('closes only the participant whose message handling threw, logged once and counted on /metrics', async () => {
    const log = captureLog();
    sfu = await startTestSfu({ logger: log.logger, wrapTransports: instrumented({ publisher: [], subscriber: [] }) });
    const alice = await join('alice');
    const bob = await join('bob');
    const sdp = 'v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\na=x-throw\r\n';
    alice.send(offerRequest(sdp));
    expect((await alice.next('leave')).action).toBe(LeaveRequest_Action.RECONNECT);
    await alice.closed;
    await waitFor('alice gone from the room', () => !sfu!.sfu.rooms.getRoom('test-room')?.participants.has('alice' as never));

    bob.send(new SignalRequest({ message: { case: 'ping', value: 1n } }));
    await bob.next('pong');
    const errors = log.atLeast(50);
    expect(errors.map((l) => l.msg)).toEqual(['handling a signal request failed: closing the participant']);
    expect(JSON.stringify(errors[0])).toContain('test double: offer handling failed');
    const text = await (await fetch(`${sfu.url}/metrics`)).text();
    expect(text).toMatch(/^matrixrtc_sfu_participant_failures_total 1$/m);
  });

  it('survives sockets reset while their upgrade is being authenticated', async () => {
    sfu = await startTestSfu();
    const { port } = new URL(sfu.url);
    const good = await sfu.token('alice');
    const uncaught: unknown[] = [];
    const onUncaught = (err: unknown) => uncaught.push(err);
    process.on('uncaughtException', onUncaught);
    try {
      const resets = Array.from({ length: 40 }, (_, i) =>
        new Promise<void>((resolve) => {
          const socket = connect(Number(port), '127.0.0.1', () => {
            const token = i % 2 === 0 ? good : 'not-a-token';
            socket.write(
              `GET /rtc?access_token=${token}&protocol=16 HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n` +
                'Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n',
              () => socket.resetAndDestroy(),
            );
          });
          socket.on('error', () => undefined);
          socket.on('close', () => resolve());
        }),
      );
      await Promise.all(resets);
      // The SFU still answers, and no socket error escaped to the process.
      const res = await fetch(`${sfu.url}/rtc/validate?access_token=${good}`);
      expect(res.status).toBe(200);
      const bob = await join('bob');
      bob.send(new SignalRequest({ message: { case: 'ping', value: 1n } }));
      await bob.next('pong');
    } finally {
      process.off('uncaughtException', onUncaught);
    }
    expect(uncaught).toEqual([]);
  });
});
