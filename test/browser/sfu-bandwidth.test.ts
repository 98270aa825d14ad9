/**
 * Congestion-control feedback with real Chrome (livekit-client): the SFU answers a simulcast
 * publisher with transport-wide CC feedback (sfu/media/twcc.ts), so Chrome's bandwidth estimate
 * grows and its encoder adds the high layer (rid f) of a 720p camera, which it never does
 * without feedback (it stays at q and h).
 */
import { afterEach, describe, expect, it } from 'vitest';
import type { Page } from 'playwright-core';
import { openBrowserPage, type BrowserPage } from '../support/browser.ts';
import { startTestSfu, type TestSfu } from '../support/sfu-harness.ts';
import { joinFromPage, endBrowserScenario } from './sfu-browser-client.ts';
import { waitFor } from '../support/wait.ts';
import { Upstream } from '../../sfu/media/upstream.ts';

/** Publishes a 720p simulcast camera from the page. */
export async function publishSimulcast720(page: Page): Promise<void> {
  await page.evaluate(async () => {
    const LK = window.LivekitClient;
    const room = window.testState.room as InstanceType<typeof LK.Room>;
    const track = await LK.createLocalVideoTrack({ resolution: LK.VideoPresets.h720.resolution });
    await room.localParticipant.publishTrack(track, { simulcast: true });
  });
}

/** The publisher's own view: Chrome's estimate and what each rid sends. */
async function publisherStats(page: Page): Promise<{ availableOutgoingBitrate: number; rids: Record<string, number> }> {
  return await page.evaluate(async () => {
    const room = window.testState.room as InstanceType<typeof window.LivekitClient.Room>;
    const out = { availableOutgoingBitrate: 0, rids: {} as Record<string, number> };
    for (const pub of room.localParticipant.videoTrackPublications.values()) {
      const sender = pub.track?.sender;
      if (!sender) continue;
      const report = await sender.getStats();
      report.forEach((s: Record<string, unknown>) => {
        if (s.type === 'candidate-pair' && s.nominated) out.availableOutgoingBitrate = Number(s.availableOutgoingBitrate ?? 0);
        if (s.type === 'outbound-rtp' && typeof s.rid === 'string') out.rids[s.rid] = Number(s.packetsSent ?? 0);
      });
    }
    return out;
  });
}

describe('sfu bandwidth feedback to publishers', () => {
  let sfu: TestSfu | undefined;
  const pages: BrowserPage[] = [];

  afterEach(async (ctx) => {
    await endBrowserScenario(ctx.task.result?.state === 'fail', pages, sfu);
    sfu = undefined;
  });

  it('a 720p simulcast publisher ramps up and sends the high layer (rid f) to the SFU', async () => {
    sfu = await startTestSfu();
    const alice = await openBrowserPage();
    pages.push(alice);
    await joinFromPage(alice.page, sfu.wsUrl, await sfu.token('alice'));
    await publishSimulcast720(alice.page);

    const room = sfu.sfu.rooms.getRoom('test-room')!;
    const aliceState = room.participants.get('alice' as never)!;
    const video = await waitFor('alice video published', () =>
      [...aliceState.published.values()].find((t) => t.info.mimeType === 'video/VP8'),
    );
    const upstream = video.upstream;
    expect(upstream).toBeInstanceOf(Upstream);
    const layers = (upstream as Upstream).layers;
    const f = await waitFor(
      'the SFU receiving the f layer',
      () => layers.find((l) => l.rid === 'f' && l.bitrate > 0 && Date.now() - l.lastSeen < 1000),
      { timeoutMs: 25_000, intervalMs: 100 },
    );
    expect(f.bitrate).toBeGreaterThan(0);
    const stats = await publisherStats(alice.page);
    expect(stats.rids.f ?? 0).toBeGreaterThan(0);
    // Chrome's estimate is fed by our feedback (it starts at 300 kbps without any).
    expect(stats.availableOutgoingBitrate).toBeGreaterThan(300_000);
    console.info('publisher estimate', stats.availableOutgoingBitrate, 'layers', layers.map((l) => `${l.rid}:${l.bitrate}`).join(' '));
  });
});
