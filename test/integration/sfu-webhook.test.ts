/**
 * `/sfu_webhook` as an edge facing whoever can reach it: POST only, a bounded body answered 413
 * before the rest of the upload is read (the connection is closed, not left half-drained), a
 * bad signature refused and counted in /metrics, a good one still driving the job.
 */
import { createServer } from 'node:http';
import { connect, type Socket } from 'node:net';
import express from 'express';
import { afterEach, describe, expect, it } from 'vitest';
import { createManualClock } from '../../common/clock.ts';
import { closeServer, listen, urlOf } from '../../common/http.ts';
import { createLogger } from '../../common/logger.ts';
import { createMetricsRegistry } from '../../common/metrics.ts';
import { createSfuWebhookHandler, REJECTION_LOG_INTERVAL_MS, WEBHOOK_MAX_BODY_BYTES } from '../../bridge/token/sfu-webhook.ts';
import { startTokenHarness, type TokenHarness } from './token-harness.ts';

const running: TokenHarness[] = [];
const sockets: Socket[] = [];
afterEach(async () => {
  for (const s of sockets.splice(0)) s.destroy();
  for (const h of running.splice(0)) await h.stop();
});
async function start(): Promise<TokenHarness> {
  const h = await startTokenHarness();
  running.push(h);
  return h;
}

/** Writes `head` (+ `body`) on a raw connection; resolves with what the server sent until it closed the connection. */
function raw(url: string, head: string, body: Buffer = Buffer.alloc(0)): Promise<{ text: string; closed: boolean }> {
  const u = new URL(url);
  return new Promise((resolve, reject) => {
    const sock = connect(Number(u.port), u.hostname);
    sockets.push(sock);
    let text = '';
    const timer = setTimeout(() => resolve({ text, closed: false }), 5000);
    sock.on('data', (d) => (text += d.toString('latin1')));
    sock.on('error', (err) => {
      // A reset after the answer still counts as closed; without an answer it is a failure.
      clearTimeout(timer);
      if (text) resolve({ text, closed: true });
      else reject(err);
    });
    sock.on('close', () => {
      clearTimeout(timer);
      resolve({ text, closed: true });
    });
    sock.write(head);
    if (body.length) sock.write(body);
  });
}

const metric = async (h: TokenHarness, result: string): Promise<number> => {
  const text = await (await fetch(`${h.url}/metrics`)).text();
  const m = new RegExp(`^matrixrtc_sfu_webhooks_total\\{result="${result}"\\} (\\d+)`, 'm').exec(text);
  return m ? Number(m[1]) : 0;
};

describe('/sfu_webhook', () => {
  it('answers other methods 405 with Allow: POST', async () => {
    const h = await start();
    for (const method of ['GET', 'PUT', 'DELETE']) {
      const res = await h.request(method, '/sfu_webhook');
      expect(res.status, method).toBe(405);
      expect(res.headers.get('allow')).toBe('POST');
    }
    expect(await metric(h, 'wrong_method')).toBe(3);
  });

  it('answers a declared oversized body 413 before it is sent, and closes the connection', async () => {
    const h = await start();
    // 100 MB announced, 1 KiB sent: the answer must come without the rest.
    const r = await raw(
      h.url,
      `POST /sfu_webhook HTTP/1.1\r\nHost: x\r\nContent-Type: application/webhook+json\r\nContent-Length: 100000000\r\n\r\n`,
      Buffer.alloc(1024, 0x41),
    );
    expect(r.text).toMatch(/^HTTP\/1\.1 413 /);
    expect(r.text.toLowerCase()).toContain('connection: close');
    expect(r.closed).toBe(true);
    expect(await metric(h, 'too_large')).toBe(1);
  });

  it('stops reading a chunked body at the bound: 413 while the client is still sending', async () => {
    const h = await start();
    const chunk = Buffer.alloc(WEBHOOK_MAX_BODY_BYTES + 1024, 0x41);
    const body = Buffer.concat([Buffer.from(`${chunk.length.toString(16)}\r\n`), chunk, Buffer.from('\r\n')]);
    // No terminating 0-chunk: the body never ends, so only a bounded reader can answer.
    const r = await raw(h.url, `POST /sfu_webhook HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n`, body);
    expect(r.text).toMatch(/^HTTP\/1\.1 413 /);
    expect(r.closed).toBe(true);
  });

  it('refuses a bad signature with 401, counts it, and a good webhook still counts as accepted', async () => {
    const h = await start();
    const body = JSON.stringify({ event: 'participant_joined', room: { name: 'r' }, participant: { identity: 'i' } });
    const bad = await h.request('POST', '/sfu_webhook', { body, headers: { 'Content-Type': 'application/webhook+json', Authorization: 'not-a-jwt' } });
    expect(bad.status).toBe(401);
    const unsigned = await h.request('POST', '/sfu_webhook', { body, headers: { 'Content-Type': 'application/webhook+json' } });
    expect(unsigned.status).toBe(401);
    const junk = await h.request('POST', '/sfu_webhook', { body: 'junk', headers: { Authorization: 'x' } });
    expect(junk.status).toBe(400);
    expect(await metric(h, 'bad_signature')).toBe(2);
    expect(await metric(h, 'bad_body')).toBe(1);
    expect(await h.webhook('participant_joined', 'r', 'i')).toBe(200);
    expect(await metric(h, 'accepted')).toBe(1);
  });

  it('logs rejections at most once a minute, with how many came since', async () => {
    const clock = createManualClock();
    const lines: { msg: string; rejectedSinceLastLog: number }[] = [];
    const app = express();
    app.all(
      '/sfu_webhook',
      createSfuWebhookHandler({
        apiKey: 'k',
        apiSecret: 's'.repeat(32),
        clock,
        logger: createLogger({ name: 't', level: 'warn', destination: { write: (l: string) => void lines.push(JSON.parse(l)) } }),
        metrics: createMetricsRegistry({ defaultMetrics: false }),
        onEvent: () => undefined,
      }),
    );
    const server = createServer(app);
    const url = urlOf(await listen(server, '127.0.0.1', 0));
    try {
      const bad = async () => (await fetch(`${url}/sfu_webhook`, { method: 'POST', body: '{}', headers: { Authorization: 'x' } })).status;
      for (let i = 0; i < 20; i++) expect(await bad()).toBe(401);
      expect(lines).toHaveLength(1);
      clock.advance(REJECTION_LOG_INTERVAL_MS);
      await bad();
      expect(lines).toHaveLength(2);
      expect(lines[1]!.rejectedSinceLastLog).toBe(20);
    } finally {
      await closeServer(server);
    }
  });
});
