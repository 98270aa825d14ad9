/**
 * Fault isolation on the HTTP listeners: an exception in one request's code (sync or async)
 * answers that request 500 without a stack trace, is logged once through the redacting logger
 * and counted in /metrics, and the listener goes on serving. Client errors raised by express
 * layers keep their 4xx status and are not counted as faults.
 */
import { request as httpRequest } from 'node:http';
import express from 'express';
import { afterEach, describe, expect, it } from 'vitest';
import { systemClock } from '../../common/clock.ts';
import { createLogger } from '../../common/logger.ts';
import { createMetricsRegistry } from '../../common/metrics.ts';
import { resolveBridgeConfig } from '../../bridge/config.ts';
import { createBridgeServer } from '../../bridge/server.ts';
import { startTestSfu } from '../support/sfu-harness.ts';
import { captureLogs } from '../support/log-stream.ts';

const SECRET = 'syt_request_fault_secret_0123456789';
const cleanups: (() => Promise<void>)[] = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).toReversed()) await c();
});

function rawGet(url: string, path: string): Promise<{ status: number; body: string }> {
  const u = new URL(url);
  return new Promise((resolve, reject) => {
    const req = httpRequest({ host: u.hostname, port: u.port, path, method: 'GET' }, (res) => {
      let body = '';
      res.on('data', (d: Buffer) => (body += d.toString()));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body }));
    });
    req.on('error', reject);
    req.end();
  });
}

describe('bridge listener', () => {
  it('answers an exception in one request 500 M_UNKNOWN, logs it once without secrets, counts it, and keeps serving', async () => {
    const logs = captureLogs();
    const logger = createLogger({ name: 'bridge', destination: logs.stream });
    const config = resolveBridgeConfig({
      LIVEKIT_URL: 'ws://127.0.0.1:9',
      LIVEKIT_KEY: 'k',
      LIVEKIT_SECRET: 'x'.repeat(32),
      LIVEKIT_FULL_ACCESS_HOMESERVERS: '*',
      LIVEKIT_JWT_BIND: '127.0.0.1:0',
    });
    const bridge = createBridgeServer({ config, logger, clock: systemClock, metrics: createMetricsRegistry({ defaultMetrics: false }) });
    const fault = () => Object.assign(new Error('handler bug'), { access_token: SECRET });
    bridge.app.get('/sync-fault', () => {
      throw fault();
    });
    bridge.app.get('/async-fault', async () => {
      await Promise.resolve();
      throw fault();
    });
    bridge.app.post('/json', express.json({ limit: 10 }), (_req, res) => void res.json({}));
    const { url } = await bridge.start();
    cleanups.push(() => bridge.stop());

    for (const path of ['/sync-fault', `/async-fault?access_token=${SECRET}`]) {
      const res = await fetch(`${url}${path}`);
      expect(res.status).toBe(500);
      expect(await res.json()).toEqual({ errcode: 'M_UNKNOWN', error: 'Internal Server Error' });
    }
    const bad = await fetch(`${url}/json`, { method: 'POST', headers: { 'Content-Type': 'application/json' }, body: '{"x":' });
    expect(bad.status).toBe(400);
    const big = await fetch(`${url}/json`, { method: 'POST', headers: { 'Content-Type': 'application/json' }, body: JSON.stringify({ x: 'y'.repeat(100) }) });
    expect(big.status).toBe(413);
    expect((await big.json()).errcode).toBe('M_TOO_LARGE');
    expect((await fetch(`${url}/healthz`)).status).toBe(200);

    const errors = logs.lines().filter((l) => l.level === 50);
    expect(errors.map((l) => [l.msg, l.path])).toEqual([
      ['request failed with an unexpected exception; answered 500', '/sync-fault'],
      ['request failed with an unexpected exception; answered 500', '/async-fault'],
    ]);
    expect(logs.text()).not.toContain(SECRET);
    const metrics = await fetch(`${url}/metrics`).then((r) => r.text());
    expect(metrics).toContain('matrixrtc_faults_total{kind="request"} 2');
  });
});

describe('sfu listener', () => {
  it('answers an exception thrown while routing a request 500 without a stack trace, logs and counts it', async () => {
    const logs = captureLogs();
    const sfu = await startTestSfu({ logger: createLogger({ name: 'sfu', destination: logs.stream }) });
    cleanups.push(() => sfu.stop());
    // A path the Twirp edge cannot parse as a URL (`new URL('//[')` throws).
    const res = await rawGet(sfu.url, '/twirp//[');
    expect(res.status).toBe(500);
    expect(res.body).toBe('Internal Server Error');
    expect((await fetch(`${sfu.url}/healthz`)).status).toBe(200);
    const errors = logs.lines().filter((l) => l.level === 50);
    expect(errors).toHaveLength(1);
    expect(errors[0]!.msg).toBe('request failed with an unexpected exception; answered 500');
    const metrics = await fetch(`${sfu.url}/metrics`).then((r) => r.text());
    expect(metrics).toContain('matrixrtc_faults_total{kind="request"} 1');
  });
});
