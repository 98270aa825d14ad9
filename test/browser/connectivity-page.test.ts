/**
 * The SFU's connectivity test page, opened in headless Chromium against the embedded default
 * (`npm start`'s entry point, spawned on free ports): joining with a dev token reaches
 * "connected", the page's own video comes back through the SFU and decodes, and the stats table
 * shows the ICE candidate type, RTT, packet loss and bitrate. Pasted tokens work against another
 * SFU, a bad one ends in a readable error, and an SFU with `connectivity_page: false` has no /test.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import type { Page } from 'playwright-core';
import { openUrl, type BrowserPage } from '../support/browser.ts';
import { freePort } from '../support/ports.ts';
import { startTestSfu, type TestSfu } from '../support/sfu-harness.ts';
import { waitFor } from '../support/wait.ts';

const root = fileURLToPath(new URL('../..', import.meta.url));

interface Embedded {
  child: ChildProcess;
  sfuUrl: string;
  output: () => string;
  dataDir: string;
}

async function startEmbedded(): Promise<Embedded> {
  const [sfuPort, bridgePort] = [await freePort(), await freePort()];
  const dataDir = mkdtempSync(join(tmpdir(), 'connectivity-'));
  const cleanEnv = Object.fromEntries(
    Object.entries(process.env).filter(([k]) => !k.startsWith('LIVEKIT_') && !k.startsWith('BRIDGE_')),
  );
  const child = spawn(
    process.execPath,
    ['embedded/main.ts', '--data-dir', dataDir, '--sfu-port', String(sfuPort), '--bridge-port', String(bridgePort)],
    { cwd: root, stdio: ['ignore', 'pipe', 'pipe'], env: { ...cleanEnv, LIVEKIT_LOG_LEVEL: 'warn' } },
  );
  let out = '';
  child.stdout!.on('data', (d: Buffer) => (out += d.toString()));
  child.stderr!.on('data', (d: Buffer) => (out += d.toString()));
  const sfuUrl = `http://127.0.0.1:${sfuPort}`;
  await waitFor(
    'the embedded SFU to answer /healthz',
    async () => {
      if (child.exitCode !== null) throw new Error(`embedded exited with ${child.exitCode}: ${out}`);
      return (await fetch(`${sfuUrl}/healthz`).then((r) => r.status, () => 0)) === 200;
    },
    { timeoutMs: 20_000, intervalMs: 100 },
  );
  return { child, sfuUrl, output: () => out, dataDir };
}

async function stopEmbedded(e: Embedded): Promise<void> {
  if (e.child.exitCode === null) {
    const exited = new Promise<void>((resolve) => e.child.once('exit', () => resolve()));
    e.child.kill('SIGTERM');
    await exited;
  }
  rmSync(e.dataDir, { recursive: true, force: true });
}

interface StatusLine {
  state: string;
  text: string;
}

async function status(page: Page): Promise<StatusLine> {
  return await page.evaluate(() => {
    const el = document.getElementById('status')!;
    return { state: el.dataset.state ?? '', text: el.textContent ?? '' };
  });
}

async function waitForStatus(page: Page, state: string, timeoutMs: number): Promise<StatusLine> {
  let last: StatusLine | undefined;
  try {
    return await waitFor(
      `status "${state}"`,
      async () => {
        last = await status(page);
        if (last.state === 'error' && state !== 'error') throw new Error(`page reports an error: ${last.text}`);
        return last.state === state ? last : undefined;
      },
      { timeoutMs, intervalMs: 100 },
    );
  } catch (err) {
    throw new Error(`${(err as Error).message}; last status: ${JSON.stringify(last)}`, { cause: err });
  }
}

interface ReturnedVideo {
  width: number;
  currentTime: number;
  frames: number;
}

async function returnedVideo(page: Page): Promise<ReturnedVideo> {
  return await page.evaluate(() => {
    const v = document.getElementById('returned-video') as HTMLVideoElement;
    return { width: v.videoWidth, currentTime: v.currentTime, frames: v.getVideoPlaybackQuality().totalVideoFrames };
  });
}

/** Waits until the returned <video> decodes frames, and keeps decoding (not one keyframe). */
async function waitForReturnedVideo(page: Page): Promise<ReturnedVideo> {
  const first = await waitFor(
    'the returned video to show decoded frames',
    async () => {
      const v = await returnedVideo(page);
      return v.width > 0 && v.frames > 0 ? v : undefined;
    },
    { timeoutMs: 20_000, intervalMs: 100 },
  );
  return await waitFor(
    'the returned video to keep playing',
    async () => {
      const v = await returnedVideo(page);
      return v.frames >= first.frames + 10 && v.currentTime > first.currentTime ? v : undefined;
    },
    { timeoutMs: 10_000, intervalMs: 100 },
  );
}

interface Cell {
  text: string;
  value: string | undefined;
}

async function statCells(page: Page): Promise<Record<string, Cell>> {
  return await page.evaluate(() => {
    const out: Record<string, { text: string; value: string | undefined }> = {};
    for (const dir of ['send', 'recv']) {
      for (const stat of ['candidate', 'rtt', 'loss', 'bitrate', 'path']) {
        const el = document.getElementById(`${dir}-${stat}`)!;
        out[`${dir}-${stat}`] = { text: el.textContent ?? '', value: el.dataset.value };
      }
    }
    return out;
  });
}

describe('connectivity test page against npm start', () => {
  let embedded: Embedded;
  const pages: BrowserPage[] = [];
  let otherSfu: TestSfu | undefined;

  beforeAll(async () => {
    embedded = await startEmbedded();
  });

  afterAll(async () => {
    if (embedded) await stopEmbedded(embedded);
  });

  afterEach(async (ctx) => {
    if (ctx.task.result?.state === 'fail') {
      for (const p of pages) console.log(p.consoleLines.slice(-40).join('\n'));
      console.log(embedded.output().slice(-4000));
    }
    for (const p of pages.splice(0)) {
      await p.page
        .evaluate(() => {
          const leave = document.getElementById('leave') as HTMLButtonElement;
          if (!leave.disabled) leave.click();
        })
        .catch(() => undefined);
      await p.close();
    }
    await otherSfu?.stop();
    otherSfu = undefined;
  });

  it('joins with a dev token, reaches "connected", shows its own video back through the SFU and the stats', async () => {
    const bp = await openUrl(`${embedded.sfuUrl}/test`);
    pages.push(bp);
    const { page } = bp;
    expect(page.url()).toBe(`${embedded.sfuUrl}/test/`);
    expect(await page.textContent('#lk-version')).toMatch(/^\d+\.\d+\.\d+/);
    expect((await status(page)).state).toBe('idle');

    await page.click('#join-dev');
    const connected = await waitForStatus(page, 'connected', 20_000);
    expect(connected.text).toContain(`ws://127.0.0.1:${new URL(embedded.sfuUrl).port}`);

    const video = await waitForReturnedVideo(page);
    expect(video.width).toBeGreaterThan(0);
    await waitFor('the media line to say the video is coming back', async () =>
      (await page.textContent('#media-status'))?.includes('coming back through the SFU'),
    );
    expect(await page.evaluate(() => (document.getElementById('returned-audio') as HTMLAudioElement).srcObject !== null)).toBe(true);

    // Stats are refreshed every second; bitrate needs two samples.
    const cells = await waitFor(
      'every stat filled in',
      async () => {
        const c = await statCells(page);
        const filled = ['send', 'recv'].every(
          (d) =>
            c[`${d}-candidate`]!.value !== undefined &&
            c[`${d}-rtt`]!.value !== undefined &&
            Number(c[`${d}-bitrate`]!.value) > 0,
        );
        return filled && c['recv-loss']!.value !== undefined ? c : undefined;
      },
      { timeoutMs: 15_000, intervalMs: 200 },
    );
    // Loopback: both ends of both connections are host candidates.
    expect(cells['send-candidate']!.value).toBe('host');
    expect(cells['recv-candidate']!.value).toBe('host');
    expect(cells['recv-path']!.text).toContain('127.0.0.1');
    for (const d of ['send', 'recv']) {
      expect(Number(cells[`${d}-rtt`]!.value)).toBeGreaterThanOrEqual(0);
      expect(cells[`${d}-rtt`]!.text).toMatch(/^\d+\.\d ms$/);
      expect(cells[`${d}-bitrate`]!.text).toMatch(/(kbit|Mbit)\/s$/);
    }
    expect(cells['recv-loss']!.text).toMatch(/^\d+\.\d % \(\d+ of \d+ packets\)$/);
    // Video plus audio from a fake camera: well above an audio-only stream.
    expect(Number(cells['recv-bitrate']!.value)).toBeGreaterThan(50);

    if (process.env.CONNECTIVITY_SCREENSHOT) {
      await page.screenshot({ path: process.env.CONNECTIVITY_SCREENSHOT, fullPage: true });
    }

    await page.click('#leave');
    await waitForStatus(page, 'idle', 10_000);
  });

  it('joins another SFU with pasted URL and tokens', async () => {
    otherSfu = await startTestSfu();
    const room = 'pasted-room';
    const [t1, t2] = [
      await otherSfu.token('pasted-sender', { roomJoin: true, room }),
      await otherSfu.token('pasted-receiver', { roomJoin: true, room }),
    ];
    const bp = await openUrl(`${embedded.sfuUrl}/test/`);
    pages.push(bp);
    const { page } = bp;
    await page.fill('#url', otherSfu.wsUrl);
    await page.fill('#token', t1);
    await page.fill('#token2', t2);
    await page.click('#join-pasted');
    const connected = await waitForStatus(page, 'connected', 20_000);
    expect(connected.text).toContain(`room ${room} as pasted-sender`);
    await waitForReturnedVideo(page);
  });

  it('shows a readable error when the pasted token is refused', async () => {
    const bp = await openUrl(`${embedded.sfuUrl}/test/`);
    pages.push(bp);
    const { page } = bp;
    await page.fill('#token', 'not-a-token');
    await page.click('#join-pasted');
    const failed = await waitForStatus(page, 'error', 20_000);
    expect(failed.text).toMatch(/^Could not connect: .+/);
    expect(await page.isDisabled('#join-pasted')).toBe(false);
  });

  it('shows the dev-token refusal for a room outside connectivity-test-*', async () => {
    const bp = await openUrl(`${embedded.sfuUrl}/test/`);
    pages.push(bp);
    const { page } = bp;
    await page.fill('#room', 'a-real-call');
    await page.click('#join-dev');
    const failed = await waitForStatus(page, 'error', 10_000);
    expect(failed.text).toContain('dev token refused (400)');
    expect(failed.text).toContain('connectivity-test-');
  });
});

describe('connectivity test page when disabled', () => {
  let sfu: TestSfu | undefined;
  afterEach(async () => {
    await sfu?.stop();
    sfu = undefined;
  });

  it('is not served (404) by an SFU with connectivity_page: false', async () => {
    sfu = await startTestSfu();
    expect(sfu.config.connectivity_page).toBe(false);
    expect((await fetch(`${sfu.url}/test`)).status).toBe(404);
    expect((await fetch(`${sfu.url}/test/`)).status).toBe(404);
    expect((await fetch(`${sfu.url}/test/token`, { method: 'POST', body: '{}' })).status).toBe(404);
  });
});
