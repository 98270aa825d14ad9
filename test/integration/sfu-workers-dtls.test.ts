/**
 * Media workers never make a DTLS certificate of their own: the pool makes the process's on the
 * main thread and hands it to each worker. Node 24 aborts the whole process (SIGABRT,
 * crypto_keygen.h "try_catch.CanContinue()") when a worker is terminated while WebCrypto key
 * generation is pending on it, and a worker's first peer connection used to start exactly that;
 * the pool terminates workers on shutdown and when it replaces one.
 */
import { afterEach, describe, expect, it } from 'vitest';
import { RTCDtlsTransport } from 'werift';
import { startTestSfu, type TestSfu } from '../support/sfu-harness.ts';
import { AUDIO_M_LINE, joinRaw, offerRequest, SDP_HEAD, type RawClient } from '../support/raw-signal.ts';
import { waitFor } from '../support/wait.ts';

/** The sha-256 fingerprint the SFU answers `client`'s publisher offer with (bundled, as max-bundle requires). */
async function answerFingerprint(client: RawClient): Promise<string> {
  client.send(offerRequest(`${SDP_HEAD}a=group:BUNDLE 0\r\n${AUDIO_M_LINE}a=mid:0\r\n`));
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
  const join = async (identity: string) => {
    const c = await joinRaw(sfu!, identity, 'dtls-room');
    clients.push(c);
    return c;
  };

  it("gives every worker the main thread's certificate, so none generates a key it could be terminated in", async () => {
    sfu = await startTestSfu({ workers: 2, workerPlacement: 'spread' });
    const alice = await join('alice');
    const bob = await join('bob');
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
    const carol = await join('carol');
    expect(pool.workerOf(carol.sid)).toBe(0);
    expect(await answerFingerprint(carol)).toBe(own);
  });
});
