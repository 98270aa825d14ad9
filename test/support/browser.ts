/**
 * Browser pages for tests: each call opens a fresh context + page in the shared headless
 * Chromium (launched by chromium-global-setup.ts) on the page that bundles the real
 * livekit-client. Only usable from the `browser` test project. `close()` disposes the context
 * and the connection.
 */
import { inject } from 'vitest';
import { chromium, type Page, type BrowserContext } from 'playwright-core';

export interface BrowserPage {
  page: Page;
  context: BrowserContext;
  /** Console lines the page printed, for diagnosing a failed scenario. */
  consoleLines: string[];
  close(): Promise<void>;
}

export async function openBrowserPage(): Promise<BrowserPage> {
  const browser = await chromium.connect(inject('chromiumWsEndpoint'));
  const context = await browser.newContext({ permissions: ['camera', 'microphone'] });
  const page = await context.newPage();
  const consoleLines: string[] = [];
  page.on('console', (msg) => consoleLines.push(`[${msg.type()}] ${msg.text()}`));
  page.on('pageerror', (err) => consoleLines.push(`[pageerror] ${err.message}`));
  await page.goto(inject('browserPageUrl'));
  await page.waitForFunction(() => typeof window.LivekitClient?.Room === 'function', undefined, { timeout: 15_000 });
  return {
    page,
    context,
    consoleLines,
    async close() {
      await context.close().catch(() => undefined);
      await browser.close().catch(() => undefined);
    },
  };
}

/**
 * A fresh context + page in the shared Chromium on any URL (e.g. a page our server serves),
 * with camera and microphone allowed (fake devices). `close()` as for `openBrowserPage`.
 */
export async function openUrl(url: string): Promise<BrowserPage> {
  const browser = await chromium.connect(inject('chromiumWsEndpoint'));
  const context = await browser.newContext({ permissions: ['camera', 'microphone'] });
  const page = await context.newPage();
  const consoleLines: string[] = [];
  page.on('console', (msg) => consoleLines.push(`[${msg.type()}] ${msg.text()}`));
  page.on('pageerror', (err) => consoleLines.push(`[pageerror] ${err.message}`));
  const close = async () => {
    await context.close().catch(() => undefined);
    await browser.close().catch(() => undefined);
  };
  try {
    await page.goto(url);
  } catch (err) {
    await close();
    throw err;
  }
  return { page, context, consoleLines, close };
}

/** URL of the bundled livekit-client E2EE worker, for `new Worker(url, {type: 'module'})`. */
export function e2eeWorkerUrl(): string {
  return new URL('/e2ee-worker.js', inject('browserPageUrl')).toString();
}
