/**
 * The SFU's UDP ports (issue 13: "UDP ports run out silently"), with a range of three ports:
 * a joiner who could not get one is refused up front with LiveKit's 503, the exhaustion is
 * logged and counted on /metrics, and a port freed by a leaving participant admits the next
 * one; a participant that never answers its subscriber offer is ended after LiveKit's 15 s
 * negotiation timeout (leave RECONNECT) and gives its port back.
 */
import { afterEach, describe, expect, it } from 'vitest';
import { createSocket } from 'node:dgram';
import WebSocket from 'ws';
import { LeaveRequest_Action, SignalResponse } from '@livekit/protocol';
import { createManualClock } from '../../common/clock.ts';
import { createLogger } from '../../common/logger.ts';
import { rtcNodeScene } from '../support/rtc-node.ts';
import type { TestSfu } from '../support/sfu-harness.ts';
import { waitFor } from '../support/wait.ts';

/** Below the kernel's ephemeral range (32768–60999), so no client socket lands in it by chance. */
const RANGE: [number, number] = [31240, 31242];

async function metric(url: string, name: string): Promise<number> {
  const text = await (await fetch(`${url}/metrics`)).text();
  const line = text.split('\n').find((l) => l.startsWith(`${name} `));
  return line === undefined ? Number.NaN : Number(line.slice(name.length + 1));
}

function rtcUrl(sfu: TestSfu, token: string): string {
  return `${sfu.wsUrl}/rtc?access_token=${encodeURIComponent(token)}&protocol=16&sdk=js&version=2.23.0`;
}

/** Opens a signalling connection: the upgrade's HTTP refusal, or the socket and what it receives. */
async function openSignal(
  url: string,
): Promise<{ refused: { status: number; body: string } } | { ws: WebSocket; messages: SignalResponse[] }> {
  return await new Promise((resolve, reject) => {
    const ws = new WebSocket(url);
    const messages: SignalResponse[] = [];
    ws.on('message', (data: Buffer) => messages.push(SignalResponse.fromBinary(new Uint8Array(data))));
    ws.once('open', () => resolve({ ws, messages }));
    ws.once('unexpected-response', (_req, res) => {
      let body = '';
      res.on('data', (c: Buffer) => (body += c.toString('utf8')));
      res.on('end', () => resolve({ refused: { status: res.statusCode ?? 0, body } }));
    });
    ws.once('error', reject);
  });
}

describe('sfu UDP ports', () => {
  const scene = rtcNodeScene();
  const sockets: WebSocket[] = [];
  afterEach(async () => {
    for (const ws of sockets.splice(0)) ws.close();
    await scene.end();
  });

  it('refuses a joiner with 503 when every port is in use, logs and counts it, and admits again once one frees', async () => {
    const lines: string[] = [];
    const logger = createLogger({ name: 'sfu', level: 'info', destination: { write: (l: string) => void lines.push(l) } });
    // One media pool (also under SFU_TEST_WORKERS): three ports cannot be sliced between workers
    // (at least two each, sfu/media/workers/pool.ts slicePorts), and the 503 is about one pool.
    const sfu = await scene.start({ portRange: RANGE, logger, workers: 1 });

    const alice = await scene.connect('alice');
    const bob = await scene.connect('bob');
    const subscribed = bob.waitForEvent('trackSubscribed', (_t, _pub, p) => p.identity === 'alice', 15_000);
    await alice.publishTone(440); // alice: publisher + subscriber PC; bob: subscriber PC
    await subscribed;

    const carol = await openSignal(rtcUrl(sfu, await sfu.token('carol')));
    if ('ws' in carol) sockets.push(carol.ws);
    expect(carol).toEqual({ refused: { status: 503, body: expect.stringContaining('node has exceeded its configured limit') } });
    expect(await metric(sfu.url, 'matrixrtc_sfu_udp_ports_capacity')).toBe(3);
    expect(await metric(sfu.url, 'matrixrtc_sfu_udp_ports_in_use')).toBe(3);
    // Each PC bound the port it was leased (none took another's, which would look like a squatter).
    expect(lines.filter((l) => l.includes('bound by another process'))).toEqual([]);
    expect(await metric(sfu.url, 'matrixrtc_sfu_udp_port_exhausted_total')).toBeGreaterThanOrEqual(1);
    expect(lines.some((l) => l.includes('no free UDP port in rtc.port_range_start..end'))).toBe(true);

    await bob.disconnect();
    await waitFor('bob’s port back in the pool', async () => (await metric(sfu.url, 'matrixrtc_sfu_udp_ports_in_use')) === 2);
    const again = await openSignal(rtcUrl(sfu, await sfu.token('carol')));
    if (!('ws' in again)) throw new Error(`carol refused again: ${JSON.stringify(again.refused)}`);
    sockets.push(again.ws);
    await waitFor('carol’s join response', () => again.messages.some((m) => m.message.case === 'join'));
  });

  it('ends a participant that never answers its subscriber offer after 15 s (leave RECONNECT) and frees its port', async () => {
    const clock = createManualClock(Date.now());
    const sfu = await scene.start({ portRange: RANGE, clock });
    const idle = await openSignal(rtcUrl(sfu, await sfu.token('idle')));
    if (!('ws' in idle)) throw new Error(`refused: ${JSON.stringify(idle.refused)}`);
    sockets.push(idle.ws);
    await waitFor('the subscriber offer', () => idle.messages.some((m) => m.message.case === 'offer'));

    clock.advance(14_000);
    expect(idle.messages.some((m) => m.message.case === 'leave')).toBe(false);
    clock.advance(1_000);
    const leave = await waitFor('a leave', () => idle.messages.find((m) => m.message.case === 'leave'), { timeoutMs: 3000 });
    expect(leave.message.case === 'leave' && leave.message.value.action).toBe(LeaveRequest_Action.RECONNECT);
    expect(await metric(sfu.url, 'matrixrtc_sfu_udp_port_exhausted_total')).toBe(0);
    await waitFor('the port back in the pool', async () => (await metric(sfu.url, 'matrixrtc_sfu_udp_ports_in_use')) === 0);
  });

  it('skips a port of the range that another process holds, and says so', async () => {
    const range: [number, number] = [31250, 31251];
    const squatter = createSocket('udp4');
    await new Promise<void>((resolve) => squatter.bind(range[1], '127.0.0.1', () => resolve()));
    scene.onEnd(() => new Promise<void>((resolve) => squatter.close(() => resolve())));
    const lines: string[] = [];
    const logger = createLogger({ name: 'sfu', level: 'info', destination: { write: (l: string) => void lines.push(l) } });
    // One media pool (also under SFU_TEST_WORKERS): a two-port range cannot be sliced between workers.
    await scene.start({ portRange: range, logger, workers: 1 });
    // rtc-node's connect resolves once its primary (subscriber) PC is connected: it got the free port.
    const alice = await scene.connect('alice');
    expect(alice.room.isConnected).toBe(true);
    // (The pool starts at a random block: when it tried the held port first, it skipped it and said so.)
    expect(lines.some((l) => l.includes('no free UDP port'))).toBe(false);
  });
});
