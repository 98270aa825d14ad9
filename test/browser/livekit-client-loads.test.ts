/**
 * The browser harness itself: the shared headless Chromium loads the bundled real
 * livekit-client, and the fake camera and microphone produce live tracks through it.
 */
import { readFileSync } from 'node:fs';
import { afterEach, describe, expect, it } from 'vitest';
import { openBrowserPage, type BrowserPage } from '../support/browser.ts';

const installed = JSON.parse(
  readFileSync(new URL('../../node_modules/livekit-client/package.json', import.meta.url), 'utf8'),
) as { version: string };

describe('browser harness', () => {
  let bp: BrowserPage | undefined;
  afterEach(async () => {
    await bp?.close();
    bp = undefined;
  });

  it('loads the installed livekit-client and captures fake camera and microphone tracks', async () => {
    bp = await openBrowserPage();
    const result = await bp.page.evaluate(async () => {
      const { Room, createLocalTracks, version } = window.LivekitClient;
      const room = new Room();
      const tracks = await createLocalTracks({ audio: true, video: true });
      const kinds = tracks.map((t) => `${t.kind}:${t.mediaStreamTrack.readyState}`).toSorted();
      tracks.forEach((t) => t.stop());
      return { version, state: room.state, kinds };
    });
    expect(result.version).toBe(installed.version);
    expect(result.state).toBe('disconnected');
    expect(result.kinds).toEqual(['audio:live', 'video:live']);
  });
});
