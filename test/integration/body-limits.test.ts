/**
 * Body limits on the bridge listener and what happens to the connection after an over-limit
 * answer, over raw TCP so keep-alive is visible: the token endpoints answer 413 M_TOO_LARGE
 * above 64 KiB, the appservice transaction route above MAX_TRANSACTION_BYTES, and an answer
 * given while a large body is still unread says `Connection: close` and closes the connection
 * (before, it kept the connection and the next request on it hung until it was reset). A small
 * unread remainder is drained instead, so the connection stays usable.
 */
import { connect, type Socket } from 'node:net';
import { afterEach, describe, expect, it } from 'vitest';
import { systemClock } from '../../common/clock.ts';
import { createSilentLogger } from '../../common/logger.ts';
import { createMetricsRegistry } from '../../common/metrics.ts';
import { APPSERVICE_PREFIX } from '../../bridge/appservice/appservice.ts';
import { createAppserviceRouter, MAX_TRANSACTION_BYTES } from '../../bridge/appservice/api.ts';
import { createBridgeMetrics } from '../../bridge/appservice/metrics.ts';
import { createMemoryStore } from '../../bridge/store/memory-store.ts';
import { MAX_BODY_BYTES } from '../../bridge/token/body.ts';
import { resolveBridgeConfig } from '../../bridge/config.ts';
import { createBridgeServer } from '../../bridge/server.ts';
import { startTokenHarness, HS_TOKEN } from './token-harness.ts';
import { waitFor } from '../support/wait.ts';

let h: { url: string; stop(): Promise<void> } | undefined;
const sockets: Socket[] = [];
afterEach(async () => {
  for (const s of sockets.splice(0)) s.destroy();
  await h?.stop();
  h = undefined;
});

interface RawConnection {
  socket: Socket;
  /** Everything received so far. */
  received(): string;
  closed(): boolean;
  write(data: string | Buffer): void;
}

async function open(url: string): Promise<RawConnection> {
  const u = new URL(url);
  const socket = connect(Number(u.port), u.hostname);
  sockets.push(socket);
  await new Promise<void>((resolve, reject) => socket.once('connect', resolve).once('error', reject));
  let text = '';
  let closed = false;
  socket.on('data', (d: Buffer) => (text += d.toString('latin1')));
  socket.on('error', () => undefined);
  socket.on('close', () => (closed = true));
  return { socket, received: () => text, closed: () => closed, write: (d) => void socket.write(d) };
}

function head(method: string, path: string, headers: Record<string, string | number>): string {
  return `${method} ${path} HTTP/1.1\r\nHost: bridge\r\n${Object.entries(headers).map(([k, v]) => `${k}: ${v}\r\n`).join('')}\r\n`;
}

function answers(text: string): { status: number; headers: string }[] {
  return [...text.matchAll(/HTTP\/1\.1 (\d{3})[^\r]*\r\n((?:[^\r]+\r\n)*)\r\n/g)].map((m) => ({ status: Number(m[1]), headers: m[2]!.toLowerCase() }));
}

/** A bridge listener with only the appservice API, mounted as bridge.ts does. */
async function startAppserviceListener(): Promise<{ url: string; stop(): Promise<void> }> {
  const config = resolveBridgeConfig({
    LIVEKIT_URL: 'ws://127.0.0.1:9',
    LIVEKIT_KEY: 'k',
    LIVEKIT_SECRET: 'x'.repeat(32),
    LIVEKIT_FULL_ACCESS_HOMESERVERS: '*',
    LIVEKIT_JWT_BIND: '127.0.0.1:0',
  });
  const registry = createMetricsRegistry({ defaultMetrics: false });
  const bridge = createBridgeServer({ config, logger: createSilentLogger(), clock: systemClock, metrics: registry });
  const store = createMemoryStore({ clock: systemClock });
  bridge.app.use(
    APPSERVICE_PREFIX,
    createAppserviceRouter({
      hsToken: HS_TOKEN,
      store,
      logger: createSilentLogger(),
      metrics: createBridgeMetrics(registry, store),
      applyEvents: async () => undefined,
      txnTtlMs: 60_000,
    }),
  );
  const { url } = await bridge.start();
  return { url, stop: () => bridge.stop() };
}

/** A message event of about 64 KiB, the largest PDU a homeserver accepts. */
function pdu(i: number) {
  return {
    type: 'm.room.message',
    event_id: `$e${i}`,
    room_id: '!r:hs',
    sender: '@a:hs',
    origin_server_ts: 1,
    content: { body: 'x'.repeat(64 * 1024 - 200) },
    unsigned: { age: 1 },
  };
}

describe('bridge body limits', () => {
  it('answers a token request larger than 64 KiB 413 M_TOO_LARGE and closes the connection instead of leaving the body in it', async () => {
    h = await startTokenHarness();
    const c = await open(h.url);
    const size = 2 * 1024 * 1024;
    c.write(head('POST', '/get_token', { 'Content-Type': 'application/json', 'Content-Length': size }));
    c.write(Buffer.alloc(128 * 1024, 0x20)); // part of the body; the rest never comes
    await waitFor('the 413 answer', () => answers(c.received()).length === 1);
    const [a] = answers(c.received());
    expect(a!.status).toBe(413);
    expect(a!.headers).toContain('connection: close');
    expect(c.received()).toContain('"errcode":"M_TOO_LARGE"');
    await waitFor('the bridge closing the connection', () => c.closed(), { timeoutMs: 3_000 });
  });

  it('counts a chunked token body too, and answers 413 once it passes the limit', async () => {
    h = await startTokenHarness();
    const c = await open(h.url);
    c.write(head('POST', '/sfu/get', { 'Content-Type': 'application/json', 'Transfer-Encoding': 'chunked' }));
    const chunk = Buffer.alloc(MAX_BODY_BYTES / 2 + 1, 0x20);
    for (let i = 0; i < 3; i++) c.write(Buffer.concat([Buffer.from(`${chunk.length.toString(16)}\r\n`), chunk, Buffer.from('\r\n')]));
    await waitFor('the 413 answer', () => answers(c.received()).length === 1);
    expect(answers(c.received())[0]).toMatchObject({ status: 413 });
    expect(answers(c.received())[0]!.headers).toContain('connection: close');
    await waitFor('the bridge closing the connection', () => c.closed(), { timeoutMs: 3_000 });
  });

  it('drains a small over-limit remainder so the next request on the same connection is answered', async () => {
    h = await startTokenHarness();
    const c = await open(h.url);
    const body = Buffer.alloc(MAX_BODY_BYTES + 10_000, 0x20);
    c.write(Buffer.concat([Buffer.from(head('POST', '/get_token', { 'Content-Type': 'application/json', 'Content-Length': body.length })), body]));
    c.write(head('GET', '/healthz', {}));
    await waitFor('both answers on one connection', () => answers(c.received()).length === 2, { timeoutMs: 3_000 });
    expect(answers(c.received()).map((a) => a.status)).toEqual([413, 200]);
    expect(answers(c.received()).map((a) => a.headers.includes('connection: close'))).toEqual([false, false]);
    expect(c.closed()).toBe(false);
  });

  it('closes the connection when a large body is refused before it is read (no hs_token)', async () => {
    h = await startAppserviceListener();
    const c = await open(h.url);
    c.write(head('PUT', `${APPSERVICE_PREFIX}/v1/transactions/1`, { 'Content-Type': 'application/json', 'Content-Length': 5_000_000 }));
    c.write('{"events":[');
    await waitFor('the 401 answer', () => answers(c.received()).length === 1);
    expect(answers(c.received())[0]).toMatchObject({ status: 401 });
    expect(answers(c.received())[0]!.headers).toContain('connection: close');
    await waitFor('the bridge closing the connection', () => c.closed(), { timeoutMs: 3_000 });
  });

  it('answers an appservice transaction above MAX_TRANSACTION_BYTES 413 M_TOO_LARGE and closes the connection', async () => {
    h = await startAppserviceListener();
    const c = await open(h.url);
    c.write(
      head('PUT', `${APPSERVICE_PREFIX}/v1/transactions/2`, {
        'Content-Type': 'application/json',
        Authorization: `Bearer ${HS_TOKEN}`,
        'Content-Length': MAX_TRANSACTION_BYTES + 1,
      }),
    );
    c.write('{"events":[');
    await waitFor('the 413 answer', () => answers(c.received()).length === 1);
    expect(answers(c.received())[0]).toMatchObject({ status: 413 });
    expect(c.received()).toContain('"errcode":"M_TOO_LARGE"');
    await waitFor('the bridge closing the connection', () => c.closed(), { timeoutMs: 3_000 });
  });

  it('accepts a transaction of 100 PDUs of 64 KiB each, the most Synapse sends', async () => {
    h = await startAppserviceListener();
    const res = await fetch(`${h.url}${APPSERVICE_PREFIX}/v1/transactions/3`, {
      method: 'PUT',
      headers: { 'Content-Type': 'application/json', Authorization: `Bearer ${HS_TOKEN}` },
      body: JSON.stringify({ events: Array.from({ length: 100 }, (_, i) => pdu(i)) }),
    });
    expect(res.status).toBe(200);
  });
});
