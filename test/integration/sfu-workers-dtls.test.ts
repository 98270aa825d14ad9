/**
 * Media workers never make a DTLS certificate of their own: the pool makes the process's on the
 * main thread and hands it to each worker. Node 24 aborts the whole process (SIGABRT,
 * crypto_keygen.h "try_catch.CanContinue()") when a worker is terminated while WebCrypto key
 * generation is pending on it, and a worker's first peer connection used to start exactly that;
 * the pool terminates workers on shutdown and when it replaces one.
 */
import { afterEach, describe, expect, it } from 'vitest';
import { RTCDtlsTransport } from 'werift';
import { AccessToken } from 'livekit-server-sdk';
import { SessionDescription, SignalRequest } from '@livekit/protocol';
import { startTestSfu, TEST_API_KEY, TEST_API_SECRET, type TestSfu } from '../support/sfu-harness.ts';
import { openRaw, rtcUrl, type RawClient } from '../support/raw-signal.ts';
import { waitFor } from '../support/wait.ts';

const OFFER =
  'v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\na=group:BUNDLE 0\r\n' +
  'm=audio 9 UDP/TLS/RTP/SAVPF 111\r\nc=IN IP4 0.0.0.0\r\na=ice-ufrag:abcd\r\na=ice-pwd:abcdefghijklmnopqrstuvwx\r\n' +
  `a=fingerprint:sha-256 ${'AB:'.repeat(31)}AB\r\na=setup:actpass\r\na=mid:0\r\na=rtcp-mux\r\na=sendonly\r\na=rtpmap:111 opus/48000/2\r\n`;

async function joinRaw(sfu: TestSfu, identity: string): Promise<RawClient & { sid: string }> {
  const at = new AccessToken(TEST_API_KEY, TEST_API_SECRET, { identity, ttl: '10m' });
  at.addGrant({ roomJoin: true, room: 'dtls-room' });
  const client = await openRaw(rtcUrl(sfu, await at.toJwt()));
  const join = await client.next('join');
  return Object.assign(client, { sid: join.participant!.sid });
}

/** The sha-256 fingerprint the SFU answers `client`'s publisher offer with. */
async function answerFingerprint(client: RawClient): Promise<string> {
  client.send(new SignalRequest({ message: { case: 'offer', value: new SessionDescription({ type: 'offer', sdp: OFFER, id: 1 }) } }));
  const answer = await client.next('answer', 10_000);
  const line = /^a=fingerprint:sha-256 (\S+)/m.exec(answer.sdp);
  if (!line) throw new Error(`no sha-256 fingerprint in the answer:\n${answer.sdp}`);
  return line[1]!.toUpperCase();
}

describe('sfu media workers and DTLS', () => {
  let sfu: TestSfu | undefined;
  const clients: RawClient[] = [];
  afterEach(async () => {
    for (const c of clients.splice(0)) c.ws.terminate();
    await sfu?.stop();
    sfu = undefined;
  });

  it("gives every worker the main thread's certificate, so none generates a key it could be terminated in", async () => {
    sfu = await startTestSfu({ workers: 2, workerPlacement: 'spread' });
    const alice = await joinRaw(sfu, 'alice');
    const bob = await joinRaw(sfu, 'bob');
    clients.push(alice, bob);
    const pool = sfu.sfu.mediaWorkers!;
    expect([pool.workerOf(alice.sid), pool.workerOf(bob.sid)].toSorted()).toEqual([0, 1]);

    // The SFU runs in this process: its main thread's certificate is werift's one of this thread.
    const own = (await RTCDtlsTransport.SetupCertificate()).getFingerprints().find((f) => f.algorithm === 'sha-256')!.value.toUpperCase();
    expect(await answerFingerprint(alice)).toBe(own);
    expect(await answerFingerprint(bob)).toBe(own);

    // A replacement worker is given the same one: carol joins the emptied slot.
    const restarts = pool.workers()[0]!.restarts;
    await pool.terminate(0);
    await waitFor('worker 0 is replaced', () => pool.workers()[0]!.restarts === restarts + 1);
    await pool.ready();
    const carol = await joinRaw(sfu, 'carol');
    clients.push(carol);
    expect(pool.workerOf(carol.sid)).toBe(0);
    expect(await answerFingerprint(carol)).toBe(own);
  });
});
