/**
 * The hostile side of test/integration/flood.test.ts, run in a worker thread so that its work
 * never delays the test thread's rtc-node publisher and frame counter. For `durationMs` it
 * sends, in parallel and bounded (a fixed number of lanes, each loop bounded in count and time,
 * all on loopback):
 * - junk signalling to the SFU's `/rtc`: upgrades with no, garbage, wrongly signed and
 *   unknown-key tokens (each must be refused with an HTTP status), and sessions with a valid
 *   token that send random binary and text frames, nonsense requests and one frame over the
 *   SFU's frame limit (the SFU must close it);
 * - junk UDP from 127.0.0.9 to every port of the SFU's rtc range (udp-junk.ts);
 * - oversized HTTP bodies to the bridge's token endpoints, `/sfu_webhook` and appservice
 *   transaction route and to the SFU's Twirp, over raw TCP: each must be answered with a
 *   status or have its connection closed within `HANG_MS`, never left hanging.
 * It posts `{ready}` once loaded (just before it starts), `{warm}` `warmUpMs` after that, and
 * `{report}` with one `FloodReport` when done; then it exits.
 */
import { parentPort, workerData } from 'node:worker_threads';
import { connect } from 'node:net';
import { randomBytes } from 'node:crypto';
import WebSocket from 'ws';
import { AccessToken, type VideoGrant } from 'livekit-server-sdk';
import { AddTrackRequest, SessionDescription, SignalRequest, TrickleRequest, UpdateParticipantMetadata } from '@livekit/protocol';
import { floodPorts } from './udp-junk.ts';

export interface FloodOptions {
  sfuPort: number;
  range: [number, number];
  bridgePort: number;
  hsToken: string;
  apiKey: string;
  apiSecret: string;
  /** The pair's room: the valid-token junk sessions join it too. */
  room: string;
  /** The whole flood, warm-up included. */
  durationMs: number;
  /** When to post `{warm}`: the parent measures the processes' memory from then on. */
  warmUpMs: number;
  /** One round of junk datagrams to every port each this often. */
  udpIntervalMs: number;
}

/** Outcome of one request: its HTTP status, `closed` (closed unanswered) or `hang`. */
export type Outcome = number | 'closed' | 'hang';

export type FloodMessage = { ready: true } | { warm: true } | { report: FloodReport };

export interface FloodReport {
  udpSent: number;
  udpReceived: number;
  /** Refused upgrades by outcome. */
  badUpgrades: Record<string, number>;
  /** Valid-token junk sessions: opened, frames sent, closed by the SFU after the oversized frame. */
  junkSessions: { opened: number; framesSent: number; closedBySfu: number; notClosed: number; failedToOpen: number };
  /** Oversized HTTP requests by target, then outcome. */
  http: Record<string, Record<string, number>>;
}

/** How long a request may go unanswered (and its connection open) before it counts as a hang. */
export const HANG_MS = 5_000;
/** A frame over the SFU's default `limit.signal_message_size_limit` (2 MiB). */
const OVERSIZED_FRAME = 3 << 20;

const opts = workerData as FloodOptions;
// A worker_threads port, not a window: no target origin.
const post = (m: FloodMessage) => parentPort!.postMessage(m, []);
post({ ready: true });
const deadline = Date.now() + opts.durationMs;
setTimeout(() => post({ warm: true }), opts.warmUpMs);
const report: FloodReport = {
  udpSent: 0,
  udpReceived: 0,
  badUpgrades: {},
  junkSessions: { opened: 0, framesSent: 0, closedBySfu: 0, notClosed: 0, failedToOpen: 0 },
  http: {},
};
const bump = (table: Record<string, number>, key: string) => (table[key] = (table[key] ?? 0) + 1);

async function token(identity: string, video: VideoGrant, secret = opts.apiSecret, key = opts.apiKey): Promise<string> {
  const at = new AccessToken(key, secret, { ttl: '10m', identity });
  at.addGrant(video);
  return at.toJwt();
}

/** Runs `lanes` copies of `step` until the deadline or `maxPerLane` steps each. */
async function lanes(count: number, maxPerLane: number, step: (lane: number, i: number) => Promise<void>): Promise<void> {
  await Promise.all(
    Array.from({ length: count }, async (_, lane) => {
      for (let i = 0; i < maxPerLane && Date.now() < deadline; i++) await step(lane, i);
    }),
  );
}

/** An upgrade that must be refused: resolves with its HTTP status, `closed` or `hang`. */
function refusedUpgrade(url: string): Promise<Outcome | 'accepted'> {
  return new Promise((resolve) => {
    const ws = new WebSocket(url);
    const timer = setTimeout(() => {
      ws.terminate();
      resolve('hang');
    }, HANG_MS);
    const done = (o: Outcome | 'accepted') => {
      clearTimeout(timer);
      resolve(o);
    };
    ws.once('open', () => {
      ws.terminate();
      done('accepted');
    });
    ws.once('unexpected-response', (req, res) => {
      done(res.statusCode ?? 0);
      res.resume();
      req.destroy();
    });
    ws.once('error', () => done('closed'));
  });
}

async function badSignalling(): Promise<void> {
  const base = `ws://127.0.0.1:${opts.sfuPort}/rtc`;
  const q = '&protocol=16&sdk=js&version=2.23.0';
  const wrongSecret = await token('mallory', { roomJoin: true, room: opts.room }, 'not-the-secret-0123456789abcdef-0123456789');
  const unknownKey = await token('mallory', { roomJoin: true, room: opts.room }, opts.apiSecret, 'nobody');
  const urls = [
    `${base}?protocol=16`,
    `${base}?access_token=${randomBytes(40).toString('base64url')}${q}`,
    `${base}?access_token=${encodeURIComponent(wrongSecret)}${q}`,
    `${base}?access_token=${encodeURIComponent(unknownKey)}${q}`,
    `${base}?access_token=eyJhbGciOiJub25lIn0.${randomBytes(30).toString('base64url')}.${q}`,
  ];
  await lanes(4, 6_000, async (lane, i) => {
    bump(report.badUpgrades, String(await refusedUpgrade(urls[(lane + i) % urls.length]!)));
  });
}

function randomJson(): string {
  const pick = randomBytes(1)[0]! % 4;
  if (pick === 0) return JSON.stringify({ offer: { type: 'offer', sdp: randomBytes(64).toString('hex') } });
  if (pick === 1) return JSON.stringify({ trickle: { candidateInit: 'null', target: 7 } });
  if (pick === 2) return `{"${randomBytes(8).toString('hex')}": [${'['.repeat(50)}`;
  return JSON.stringify({ addTrack: { cid: randomBytes(4).toString('hex'), name: 'x'.repeat(300), type: 'AUDIO' } });
}

/** Nonsense a member with a valid token can send: bad SDP, bad candidates, junk tracks, metadata. */
function junkRequests(): SignalRequest[] {
  return [
    new SignalRequest({ message: { case: 'offer', value: new SessionDescription({ type: 'offer', sdp: `v=0\r\n${randomBytes(200).toString('latin1')}` }) } }),
    new SignalRequest({ message: { case: 'trickle', value: new TrickleRequest({ candidateInit: '{"candidate":"candidate:1 1 udp 1 10.0.0.1 9 typ host"}', target: 0 }) } }),
    new SignalRequest({ message: { case: 'trickle', value: new TrickleRequest({ candidateInit: randomBytes(50).toString('hex') }) } }),
    new SignalRequest({ message: { case: 'addTrack', value: new AddTrackRequest({ cid: randomBytes(6).toString('hex'), name: 'junk' }) } }),
    new SignalRequest({ message: { case: 'updateMetadata', value: new UpdateParticipantMetadata({ metadata: 'm'.repeat(8_000) }) } }),
  ];
}

/** One valid-token session: join, junk frames, an oversized frame; the SFU must close it. */
async function junkSession(identity: string): Promise<void> {
  const jwt = await token(identity, { roomJoin: true, room: opts.room });
  const ws = new WebSocket(`ws://127.0.0.1:${opts.sfuPort}/rtc?access_token=${encodeURIComponent(jwt)}&protocol=16&sdk=js&version=2.23.0`);
  ws.on('error', () => undefined);
  const closed = new Promise<void>((resolve) => ws.once('close', () => resolve()));
  const opened = await Promise.race([
    new Promise<boolean>((resolve) => {
      ws.once('open', () => resolve(true));
      ws.once('unexpected-response', () => resolve(false));
      ws.once('error', () => resolve(false));
    }),
    new Promise<boolean>((resolve) => setTimeout(() => resolve(false), HANG_MS)),
  ]);
  if (!opened) {
    report.junkSessions.failedToOpen++;
    ws.terminate();
    return;
  }
  report.junkSessions.opened++;
  const send = (data: Buffer | string) => {
    if (ws.readyState !== ws.OPEN) return;
    ws.send(data, { binary: typeof data !== 'string' });
    report.junkSessions.framesSent++;
  };
  // Below signal_limits' burst (200) so the frames reach the parser rather than the rate limit.
  for (let i = 0; i < 10; i++) send(randomBytes(1 + (randomBytes(2).readUInt16BE(0) % 4000)));
  for (let i = 0; i < 10; i++) send(randomJson());
  for (const req of junkRequests()) send(Buffer.from(req.toBinary()));
  send(Buffer.alloc(OVERSIZED_FRAME, 0x0a));
  const closedInTime = await Promise.race([closed.then(() => true), new Promise<boolean>((r) => setTimeout(() => r(false), HANG_MS))]);
  if (closedInTime) report.junkSessions.closedBySfu++;
  else {
    report.junkSessions.notClosed++;
    ws.terminate();
  }
}

/** Each junk session takes at least this long, so joins come at most 2 × 4 a second. */
const JUNK_SESSION_MIN_MS = 250;

async function junkSignalling(): Promise<void> {
  // Few lanes, each session at least JUNK_SESSION_MIN_MS: every one joins the pair's room and
  // costs the SFU a participant and a subscriber offer (a peer connection on a port).
  await lanes(2, 200, async (lane) => {
    const started = Date.now();
    await junkSession(`junk-${lane}`);
    await new Promise((r) => setTimeout(r, Math.max(0, started + JUNK_SESSION_MIN_MS - Date.now())));
  });
}

interface OversizedRequest {
  target: string;
  port: number;
  head: string;
  /** Body bytes to send at most (the rest of a declared length never comes). */
  sendBytes: number;
  chunked?: boolean;
}

/**
 * Sends `r` over raw TCP, the body in 64 KiB writes until the peer answers or closes or
 * `sendBytes` are out, then waits for an answer or a close until HANG_MS from the start.
 */
function oversized(r: OversizedRequest): Promise<Outcome> {
  return new Promise((resolve) => {
    const socket = connect(r.port, '127.0.0.1');
    let text = '';
    const state = { settled: false };
    const finish = (o: Outcome) => {
      if (state.settled) return;
      state.settled = true;
      clearTimeout(timer);
      socket.destroy();
      resolve(o);
    };
    const timer = setTimeout(() => finish('hang'), HANG_MS);
    socket.on('error', () => undefined);
    socket.on('data', (d: Buffer) => {
      text += d.toString('latin1');
      const m = /^HTTP\/1\.1 (\d{3})/.exec(text);
      if (m) finish(Number(m[1]));
    });
    socket.on('close', () => finish('closed'));
    socket.once('connect', async () => {
      socket.write(r.head);
      const chunk = Buffer.alloc(64 * 1024, 0x20);
      const framed = r.chunked ? Buffer.concat([Buffer.from(`${chunk.length.toString(16)}\r\n`), chunk, Buffer.from('\r\n')]) : chunk;
      for (let sent = 0; sent < r.sendBytes && !state.settled && !socket.destroyed; sent += chunk.length) {
        if (!socket.write(framed)) {
          await new Promise<void>((writable) => {
            const done = () => {
              socket.off('drain', done);
              socket.off('close', done);
              writable();
            };
            socket.once('drain', done);
            socket.once('close', done);
          });
        }
      }
    });
  });
}

function head(method: string, path: string, headers: Record<string, string | number>): string {
  return `${method} ${path} HTTP/1.1\r\nHost: 127.0.0.1\r\n${Object.entries(headers).map(([k, v]) => `${k}: ${v}\r\n`).join('')}\r\n`;
}

async function oversizedHttp(): Promise<void> {
  const admin = await token('admin', { roomList: true, roomAdmin: true, room: opts.room });
  const b = opts.bridgePort;
  const s = opts.sfuPort;
  const json = { 'Content-Type': 'application/json' };
  const declared = 8 << 20;
  const requests: OversizedRequest[] = [
    { target: 'bridge /sfu/get (Content-Length)', port: b, head: head('POST', '/sfu/get', { ...json, 'Content-Length': declared }), sendBytes: 256 << 10 },
    { target: 'bridge /get_token (chunked)', port: b, head: head('POST', '/get_token', { ...json, 'Transfer-Encoding': 'chunked' }), sendBytes: 1 << 20, chunked: true },
    {
      target: 'bridge /sfu_webhook (Content-Length)',
      port: b,
      head: head('POST', '/sfu_webhook', { 'Content-Type': 'application/webhook+json', Authorization: 'x', 'Content-Length': declared }),
      sendBytes: 256 << 10,
    },
    { target: 'bridge /sfu_webhook (chunked)', port: b, head: head('POST', '/sfu_webhook', { 'Content-Type': 'application/webhook+json', 'Transfer-Encoding': 'chunked' }), sendBytes: 1 << 20, chunked: true },
    {
      target: 'bridge appservice transaction (Content-Length)',
      port: b,
      head: head('PUT', '/_matrix/app/v1/transactions/flood', { ...json, Authorization: `Bearer ${opts.hsToken}`, 'Content-Length': 64 << 20 }),
      sendBytes: 256 << 10,
    },
    {
      target: 'bridge appservice transaction (no hs_token)',
      port: b,
      head: head('PUT', '/_matrix/app/v1/transactions/flood', { ...json, 'Content-Length': 64 << 20 }),
      sendBytes: 256 << 10,
    },
    {
      target: 'sfu Twirp ListRooms (authorized)',
      port: s,
      head: head('POST', '/twirp/livekit.RoomService/ListRooms', { 'Content-Type': 'application/protobuf', Authorization: `Bearer ${admin}`, 'Content-Length': declared }),
      sendBytes: 2 << 20,
    },
    {
      target: 'sfu Twirp ListRooms (no token)',
      port: s,
      head: head('POST', '/twirp/livekit.RoomService/ListRooms', { 'Content-Type': 'application/json', 'Content-Length': declared }),
      sendBytes: 256 << 10,
    },
    { target: 'sfu /rtc (100 KB query)', port: s, head: head('GET', `/rtc?access_token=${'a'.repeat(100_000)}`, { Connection: 'Upgrade', Upgrade: 'websocket' }), sendBytes: 0 },
  ];
  await lanes(4, 3_000, async (lane, i) => {
    const r = requests[(lane * 3 + i) % requests.length]!;
    bump((report.http[r.target] ??= {}), String(await oversized(r)));
  });
}

const udp = await floodPorts({ range: opts.range, source: '127.0.0.9', intervalMs: opts.udpIntervalMs });
await Promise.all([badSignalling(), junkSignalling(), oversizedHttp(), new Promise((r) => setTimeout(r, Math.max(0, deadline - Date.now())))]);
await udp.stop();
report.udpSent = udp.sent;
report.udpReceived = udp.received;
post({ report });
