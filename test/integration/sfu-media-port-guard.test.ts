/**
 * The SFU's media ports against forged datagrams (issue 13, critical finding): while a real
 * @livekit/rtc-node pair talks through the SFU, junk from another loopback address on every port
 * of the rtc range (plaintext DTLS alerts, unknown record types, undecryptable records, fake
 * SRTP/SRTCP, forged STUN, random bytes) neither silences the subscriber nor costs a socket;
 * a transport whose DTLS session does end ends the participant's session with a leave
 * {RECONNECT} and frees its sockets, after which the SFU still stops cleanly.
 */
import { afterEach, describe, expect, it } from 'vitest';
import type { RemoteTrack } from '@livekit/rtc-node';
import type { RTCPeerConnection } from 'werift';
import { spawn } from 'node:child_process';
import { createSocket } from 'node:dgram';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { AccessToken } from 'livekit-server-sdk';
import { connectRtcNode, countAudibleFrames, rtcNodeScene } from '../support/rtc-node.ts';
import { suiteWorkerYaml, TEST_API_KEY, TEST_API_SECRET } from '../support/sfu-harness.ts';
import { floodPorts, plaintextAlert } from '../support/udp-junk.ts';
import { freePort } from '../support/ports.ts';
import { waitFor } from '../support/wait.ts';
import { asIdentity } from '../../sfu/rtc/ids.ts';

/** A range no other test uses, below the kernel's ephemeral range (32768–60999). */
const RANGE: [number, number] = [31200, 31219];

/** Whether a UDP socket can be bound to 127.0.0.1:`port` now (nobody holds it). */
async function canBind(port: number): Promise<boolean> {
  const socket = createSocket('udp4');
  const ok = await new Promise<boolean>((resolve) => {
    socket.once('error', () => resolve(false));
    socket.bind(port, '127.0.0.1', () => resolve(true));
  });
  await new Promise<void>((resolve) => {
    try {
      socket.close(() => resolve());
    } catch {
      resolve();
    }
  });
  return ok;
}

/**
 * UDP sockets the SFU holds in RANGE: the ports there nobody can bind now. Counted by port rather
 * than by this thread's UDPWrap handles, because with media workers (SFU_TEST_WORKERS) the
 * sockets live on worker threads; rtc-node's sockets are on ephemeral ports, outside RANGE.
 */
async function udpSockets(): Promise<number> {
  let held = 0;
  for (let port = RANGE[0]; port <= RANGE[1]; port++) if (!(await canBind(port))) held++;
  return held;
}

/** Audible frames per second of `counter` over the next `ms`. */
async function rateOver(counter: { readonly count: number }, ms: number): Promise<number> {
  const start = counter.count;
  await new Promise((r) => setTimeout(r, ms));
  return ((counter.count - start) * 1000) / ms;
}

async function metric(url: string, name: string): Promise<number> {
  const text = await (await fetch(`${url}/metrics`)).text();
  let sum = 0;
  for (const line of text.split('\n')) {
    if (line.startsWith(`${name} `) || line.startsWith(`${name}{`)) sum += Number(line.slice(line.lastIndexOf(' ') + 1));
  }
  return sum;
}

describe('sfu media ports under forged datagrams', () => {
  const scene = rtcNodeScene();
  afterEach(async () => {
    await scene.end();
    // Peer connections close asynchronously after stop(): the next test starts from none.
    await waitFor('every SFU socket closed after stop', async () => (await udpSockets()) === 0, { timeoutMs: 5000 });
  });

  it('keeps the subscriber hearing the publisher and keeps its sockets while every port is flooded from another address', async () => {
    const sfu = await scene.start({ portRange: RANGE });
    const alice = await scene.connect('alice');
    const bob = await scene.connect('bob');
    const subscribed = bob.waitForEvent('trackSubscribed', (_t, _pub, p) => p.identity === 'alice', 15_000);
    await alice.publishTone(440);
    const [track] = await subscribed;
    const frames = countAudibleFrames(track as RemoteTrack);
    scene.onEnd(() => frames.stop());
    await waitFor('audible frames', () => frames.count > 50, { timeoutMs: 10_000 });
    const before = await rateOver(frames, 2000);
    expect(before).toBeGreaterThan(50);
    const sockets = await udpSockets();
    expect(sockets).toBe(3); // alice publishes and subscribes (two PCs), bob only subscribes

    const flood = await floodPorts({ range: RANGE, intervalMs: 50 });
    scene.onEnd(() => flood.stop());
    await new Promise((r) => setTimeout(r, 500));
    const during = await rateOver(frames, 3000);
    await flood.stop();
    const after = await rateOver(frames, 1000);

    expect(flood.sent).toBeGreaterThan(10_000);
    // Not even the forged STUN requests got an answer or a connectivity check back.
    expect(flood.received).toBe(0);
    expect(during).toBeGreaterThanOrEqual(0.9 * before);
    expect(after).toBeGreaterThanOrEqual(0.9 * before);
    expect(await udpSockets()).toBe(sockets);
    expect(await metric(sfu.url, 'matrixrtc_sfu_media_datagrams_dropped_total')).toBeGreaterThan(1000);
    expect(await metric(sfu.url, 'matrixrtc_sfu_transport_failures_total')).toBe(0);
  });

  it('ends the session of a participant whose DTLS session ends (leave RECONNECT: the client rejoins) and frees its sockets', async () => {
    const pcs: { pc: RTCPeerConnection; role: string }[] = [];
    const sfu = await scene.start({ portRange: RANGE, observePeerConnection: (pc, role) => pcs.push({ pc, role }) });
    const alice = await scene.connect('alice');
    const bob = await scene.connect('bob');
    const subscribed = bob.waitForEvent('trackSubscribed', (_t, _pub, p) => p.identity === 'alice', 15_000);
    await alice.publishTone(440);
    await subscribed;
    const sockets = await udpSockets();
    const room = sfu.sfu.rooms.getRoom('test-room')!;
    const firstSid = room.participants.get(asIdentity('alice'))!.sid;
    // alice joined first: her publisher and subscriber PCs are the first two made. Her subscriber
    // PC may still be negotiating when bob hears her: wait until both hold their port.
    const aliceOldPorts = await waitFor("alice's two PCs bound a port each", () => {
      const ports = new Set(pcs.slice(0, 2).flatMap((p) => p.pc.iceTransports.flatMap((t) => t.connection.localCandidates.map((c) => c.port))));
      return ports.size === 2 ? [...ports] : undefined;
    });
    const dtls = await waitFor("alice's subscriber DTLS connected", () => {
      const [d] = pcs.slice(0, 2).find((p) => p.role === 'subscriber')!.pc.dtlsTransports;
      return d?.state === 'connected' ? d : undefined;
    });

    const reconnecting = alice.waitForEvent('reconnecting', undefined, 10_000);
    const reconnected = alice.waitForEvent('reconnected', undefined, 20_000);
    // What werift does when its DTLS session takes a close alert: the session ends, media stops.
    (dtls as unknown as { dtls: { onClose: { execute(): void } } }).dtls.onClose.execute();

    await reconnecting; // told to reconnect (a leave with DISCONNECT would have ended her session)
    await reconnected;
    expect(await metric(sfu.url, 'matrixrtc_sfu_transport_failures_total')).toBe(1);
    await waitFor('alice back in the room with a new session', () => {
      const p = room.participants.get(asIdentity('alice'));
      return p !== undefined && p.sid !== firstSid && !p.isClosed;
    });
    await waitFor('the failed session’s ports free again', async () => {
      for (const port of aliceOldPorts) if (!(await canBind(port))) return false;
      return true;
    });
    // Her new session holds at most what the old one did: nothing of the old one is left open.
    await waitFor('socket count back to where it was', async () => (await udpSockets()) <= sockets);
  });
});

/** The SFU as operators run it (`sfu/main.ts` with a config file), for the SIGTERM contract. */
describe('sfu process after a flood of forged datagrams', () => {
  const root = fileURLToPath(new URL('../..', import.meta.url));
  const PROC_RANGE: [number, number] = [31220, 31229];
  const cleanups: (() => Promise<void>)[] = [];
  afterEach(async () => {
    for (const c of cleanups.splice(0).toReversed()) await c();
  });

  it('exits 0 on SIGTERM after the flood, right after a participant left', async () => {
    const port = await freePort();
    const dir = mkdtempSync(join(tmpdir(), 'sfu-guard-'));
    const configFile = join(dir, 'sfu.yaml');
    writeFileSync(
      configFile,
      [
        `port: ${port}`,
        'bind_addresses: ["127.0.0.1"]',
        `keys:\n  ${TEST_API_KEY}: ${TEST_API_SECRET}`,
        `rtc:\n  node_ip: 127.0.0.1\n  port_range_start: ${PROC_RANGE[0]}\n  port_range_end: ${PROC_RANGE[1]}`,
        'logging:\n  level: warn',
        ...suiteWorkerYaml(),
        '',
      ].join('\n'),
    );
    const env = Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith('LIVEKIT_')));
    const child = spawn(process.execPath, ['sfu/main.ts', '--config', configFile], { cwd: root, env, stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    child.stdout.on('data', (d: Buffer) => (out += d.toString()));
    child.stderr.on('data', (d: Buffer) => (out += d.toString()));
    const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
    cleanups.push(async () => {
      if (child.exitCode === null) child.kill('SIGKILL');
      await exited;
    });
    await waitFor('sfu listening', () => fetch(`http://127.0.0.1:${port}/`).then((r) => r.ok, () => false), {
      timeoutMs: 20_000,
      intervalMs: 100,
    });
    const token = (identity: string) => {
      const at = new AccessToken(TEST_API_KEY, TEST_API_SECRET, { identity, ttl: '10m' });
      at.addGrant({ roomJoin: true, room: 'test-room' });
      return at.toJwt();
    };
    const wsUrl = `ws://127.0.0.1:${port}`;
    const alice = await connectRtcNode(wsUrl, await token('alice'));
    cleanups.push(() => alice.disconnect());
    const bob = await connectRtcNode(wsUrl, await token('bob'));
    cleanups.push(() => bob.disconnect());
    const subscribed = bob.waitForEvent('trackSubscribed', (_t, _pub, p) => p.identity === 'alice', 15_000);
    await alice.publishTone(440);
    await subscribed;

    // The packet alone (what ended sessions and leaked their sockets), then everything.
    const alerts = await floodPorts({ range: PROC_RANGE, datagrams: plaintextAlert, intervalMs: 1000 });
    await alerts.stop();
    await new Promise((r) => setTimeout(r, 500));
    const flood = await floodPorts({ range: PROC_RANGE, intervalMs: 50 });
    cleanups.push(() => flood.stop());
    await new Promise((r) => setTimeout(r, 1500));
    await flood.stop();
    // alice leaves and the operator stops the SFU at once: bob's subscriber PC is renegotiating
    // (alice's track removed) while the SFU closes it.
    await alice.disconnect();
    child.kill('SIGTERM');
    const code = await Promise.race([exited, new Promise<'hung'>((r) => setTimeout(() => r('hung'), 10_000))]);
    expect(code, out).toBe(0);
  });
});
