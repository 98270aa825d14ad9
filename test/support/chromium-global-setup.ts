/**
 * globalSetup of the browser test project: bundles test/browser-page/page.ts (the real
 * livekit-client, and its E2EE worker) with esbuild, serves it on a loopback HTTP server, and
 * launches ONE headless Debian Chromium through playwright-core that every browser test file
 * connects to. Both are stopped when the run ends.
 */
import { createServer } from 'node:http';
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { dirname, join } from 'node:path';
import { build } from 'esbuild';
import { chromium } from 'playwright-core';
import type { TestProject } from 'vitest/node';
import { CHROMIUM_ARGS, CHROMIUM_PATH } from './chromium-options.ts';

declare module 'vitest' {
  export interface ProvidedContext {
    chromiumWsEndpoint: string;
    browserPageUrl: string;
  }
}

const here = dirname(fileURLToPath(import.meta.url));
const root = join(here, '..', '..');

async function bundle(entry: string, format: 'iife' | 'esm'): Promise<string> {
  const out = await build({
    entryPoints: [entry],
    bundle: true,
    write: false,
    format,
    platform: 'browser',
    target: 'chrome120',
    sourcemap: 'inline',
    logLevel: 'silent',
  });
  return out.outputFiles[0]!.text;
}

export default async function setup(project: TestProject): Promise<() => Promise<void>> {
  const pageJs = await bundle(join(root, 'test/browser-page/page.ts'), 'iife');
  const workerJs = await bundle(
    join(root, 'node_modules/livekit-client/dist/livekit-client.e2ee.worker.mjs'),
    'esm',
  ).catch(() => readFileSync(join(root, 'node_modules/livekit-client/dist/livekit-client.e2ee.worker.mjs'), 'utf8'));
  const html = '<!doctype html><html><head><meta charset="utf-8"><title>test</title></head><body><script src="/page.js"></script></body></html>';
  const server = createServer((req, res) => {
    const path = (req.url ?? '/').split('?')[0];
    if (path === '/' || path === '/index.html') {
      res.writeHead(200, { 'Content-Type': 'text/html' });
      res.end(html);
    } else if (path === '/page.js') {
      res.writeHead(200, { 'Content-Type': 'text/javascript' });
      res.end(pageJs);
    } else if (path === '/e2ee-worker.js') {
      res.writeHead(200, { 'Content-Type': 'text/javascript' });
      res.end(workerJs);
    } else {
      res.writeHead(404);
      res.end();
    }
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const addr = server.address();
  const port = typeof addr === 'object' && addr ? addr.port : 0;
  const browserServer = await chromium.launchServer({
    executablePath: CHROMIUM_PATH,
    headless: true,
    args: CHROMIUM_ARGS,
  });
  project.provide('chromiumWsEndpoint', browserServer.wsEndpoint());
  project.provide('browserPageUrl', `http://127.0.0.1:${port}/`);
  return async () => {
    await browserServer.close();
    await new Promise<void>((resolve) => server.close(() => resolve()));
  };
}
