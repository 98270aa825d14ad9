/**
 * Drives the real livekit-client in a test page against our SFU: join a room, publish the fake
 * camera and microphone, read what the page received (framesDecoded, audio packets, E2EE
 * errors) and the Room events it saw. State lives on `window.testState` of that page.
 */
import { openBrowserPage, type BrowserPage } from '../support/browser.ts';
import { startTestSfu, type TestSfu } from '../support/sfu-harness.ts';
import type { Page } from 'playwright-core';
import { waitFor } from '../support/wait.ts';

export interface PageEvent {
  type: string;
  identity?: string;
  trackSid?: string;
  kind?: string;
  detail?: string;
}

export interface ReceivedStats {
  identity: string;
  kind: string;
  trackSid: string;
  framesDecoded: number;
  packetsReceived: number;
  bytesReceived: number;
}

export interface JoinOptions {
  /** Shared E2EE passphrase; the page uses the bundled worker. */
  e2eeKey?: string;
  workerUrl?: string;
  /** livekit-client Room options (both off unless set). */
  adaptiveStream?: boolean;
  dynacast?: boolean;
  /** `relay`: the browser uses only TURN candidates (RTCConfiguration.iceTransportPolicy). */
  iceTransportPolicy?: 'relay';
  /**
   * Each remote video's element gets this CSS size (a block) when it is attached, as Element
   * Call's tiles have. Without it an element takes the size of what it decodes: with adaptive
   * stream, a first 1280x720 picture fills the viewport, pushes the next tile out of view, and
   * livekit-client pauses that track.
   */
  tile?: { width: number; height: number };
}

export async function joinFromPage(page: Page, url: string, token: string, opts: JoinOptions = {}): Promise<string> {
  return await page.evaluate(
    async ({ serverUrl, accessToken, e2eeKey, workerUrl, adaptiveStream, dynacast, iceTransportPolicy, tile }) => {
      const LK = window.LivekitClient;
      const { Room, RoomEvent } = LK;
      const events: PageEvent[] = [];
      let e2ee: ConstructorParameters<typeof Room>[0] = {};
      let keyProvider: InstanceType<typeof LK.ExternalE2EEKeyProvider> | undefined;
      if (e2eeKey !== undefined && workerUrl) {
        keyProvider = new LK.ExternalE2EEKeyProvider();
        e2ee = { e2ee: { keyProvider, worker: new Worker(workerUrl, { type: 'module' }) } };
      }
      const room = new Room({ adaptiveStream, dynacast, ...e2ee });
      const push = (e: PageEvent) => events.push(e);
      room.on(RoomEvent.ParticipantConnected, (p) => push({ type: 'participantConnected', identity: p.identity }));
      room.on(RoomEvent.ParticipantDisconnected, (p) => push({ type: 'participantDisconnected', identity: p.identity }));
      room.on(RoomEvent.TrackPublished, (pub, p) =>
        push({ type: 'trackPublished', identity: p.identity, trackSid: pub.trackSid, kind: pub.kind }),
      );
      room.on(RoomEvent.TrackUnpublished, (pub, p) =>
        push({ type: 'trackUnpublished', identity: p.identity, trackSid: pub.trackSid, kind: pub.kind }),
      );
      room.on(RoomEvent.TrackSubscribed, (track, pub, p) => {
        push({ type: 'trackSubscribed', identity: p.identity, trackSid: pub.trackSid, kind: pub.kind });
        if (track.kind === 'video') {
          const el = track.attach();
          el.muted = true;
          if (tile) {
            el.style.width = `${tile.width}px`;
            el.style.height = `${tile.height}px`;
            el.style.display = 'block';
          }
          document.body.append(el);
        }
      });
      room.on(RoomEvent.TrackMuted, (pub, p) =>
        push({ type: 'trackMuted', identity: p.identity, trackSid: pub.trackSid, kind: pub.kind }),
      );
      room.on(RoomEvent.TrackUnmuted, (pub, p) =>
        push({ type: 'trackUnmuted', identity: p.identity, trackSid: pub.trackSid, kind: pub.kind }),
      );
      room.on(RoomEvent.Disconnected, (reason) => push({ type: 'disconnected', detail: String(reason) }));
      room.on(RoomEvent.EncryptionError, (err) => push({ type: 'encryptionError', detail: String(err?.message ?? err) }));
      room.on(RoomEvent.DataReceived, (payload, p, kind) =>
        push({ type: 'data', identity: p?.identity, kind: String(kind), detail: new TextDecoder().decode(payload) }),
      );
      window.testState.room = room;
      window.testState.events = events;
      if (keyProvider && e2eeKey !== undefined) {
        await keyProvider.setKey(e2eeKey);
        await room.setE2EEEnabled(true);
      }
      await room.connect(serverUrl, accessToken, iceTransportPolicy ? { rtcConfig: { iceTransportPolicy } } : undefined);
      return room.localParticipant.sid;
    },
    {
      serverUrl: url,
      accessToken: token,
      e2eeKey: opts.e2eeKey,
      workerUrl: opts.workerUrl,
      adaptiveStream: opts.adaptiveStream ?? false,
      dynacast: opts.dynacast ?? false,
      iceTransportPolicy: opts.iceTransportPolicy,
      tile: opts.tile,
    },
  );
}

export async function publishCameraAndMic(page: Page): Promise<void> {
  await page.evaluate(async () => {
    const room = window.testState.room as InstanceType<typeof window.LivekitClient.Room>;
    await room.localParticipant.enableCameraAndMicrophone();
  });
}

export async function pageEvents(page: Page): Promise<PageEvent[]> {
  return await page.evaluate(() => (window.testState.events as PageEvent[]).slice());
}

export async function waitForPageEvent(
  page: Page,
  match: (e: PageEvent) => boolean,
  what: string,
  timeoutMs = 10_000,
): Promise<PageEvent> {
  return await waitFor(what, async () => (await pageEvents(page)).find(match), { timeoutMs, intervalMs: 100 });
}

/** inbound-rtp figures of every subscribed remote track. */
export async function receivedStats(page: Page): Promise<ReceivedStats[]> {
  return await page.evaluate(async () => {
    const room = window.testState.room as InstanceType<typeof window.LivekitClient.Room>;
    const out: ReceivedStats[] = [];
    for (const p of room.remoteParticipants.values()) {
      for (const pub of p.trackPublications.values()) {
        const track = pub.track;
        const receiver = track?.receiver;
        if (!track || !receiver) continue;
        const report = await receiver.getStats();
        let framesDecoded = 0;
        let packetsReceived = 0;
        let bytesReceived = 0;
        report.forEach((s: { type: string; framesDecoded?: number; packetsReceived?: number; bytesReceived?: number }) => {
          if (s.type !== 'inbound-rtp') return;
          framesDecoded += s.framesDecoded ?? 0;
          packetsReceived += s.packetsReceived ?? 0;
          bytesReceived += s.bytesReceived ?? 0;
        });
        out.push({ identity: p.identity, kind: pub.kind, trackSid: pub.trackSid, framesDecoded, packetsReceived, bytesReceived });
      }
    }
    return out;
  });
}

/** Waits until the page decodes `identity`'s video (framesDecoded ≥ frames) and receives its audio. */
export async function waitForMediaFrom(page: Page, identity: string, timeoutMs = 10_000, frames = 10): Promise<ReceivedStats[]> {
  let last: ReceivedStats[] = [];
  try {
    return await waitFor(
      `decoded video and audio from ${identity}`,
      async () => {
        const stats = (last = (await receivedStats(page)).filter((s) => s.identity === identity));
        const video = stats.find((s) => s.kind === 'video');
        const audio = stats.find((s) => s.kind === 'audio');
        return video && audio && video.framesDecoded >= frames && audio.packetsReceived >= 20 ? stats : undefined;
      },
      { timeoutMs, intervalMs: 100 },
    );
  } catch (err) {
    // Which receiver, and what it had of the sender's tracks when it gave up.
    const at = await page.evaluate(() => (window.testState.room as InstanceType<typeof window.LivekitClient.Room>).localParticipant.identity).catch(() => '?');
    const seen = last.map((s) => `${s.kind} ${s.trackSid}: ${s.framesDecoded} frames, ${s.packetsReceived} packets, ${s.bytesReceived} bytes`);
    throw new Error(`${(err as Error).message} at ${at}; it had ${seen.length ? seen.join('; ') : 'no track of theirs'}`, { cause: err });
  }
}

/** One remote video track as the receiving Chrome reports it (inbound-rtp). */
export interface InboundVideo {
  /** The sender's identity. */
  from: string;
  framesDecoded: number;
  keyFramesDecoded: number;
  framesDropped: number;
  freezeCount: number;
  totalFreezesDuration: number;
  frameWidth: number;
  pliCount: number;
  firCount: number;
  nackCount: number;
  packetsLost: number;
}

/** inbound-rtp figures of every subscribed remote video track of the page. */
export async function inboundVideoStats(page: Page): Promise<InboundVideo[]> {
  return await page.evaluate(async () => {
    const room = window.testState.room as InstanceType<typeof window.LivekitClient.Room>;
    const out: InboundVideo[] = [];
    for (const p of room.remoteParticipants.values()) {
      for (const pub of p.videoTrackPublications.values()) {
        const receiver = pub.track?.receiver;
        if (!receiver) continue;
        const report = await receiver.getStats();
        report.forEach((s: Record<string, unknown>) => {
          if (s.type !== 'inbound-rtp') return;
          const n = (k: string) => Number(s[k] ?? 0);
          out.push({
            from: p.identity,
            framesDecoded: n('framesDecoded'),
            keyFramesDecoded: n('keyFramesDecoded'),
            framesDropped: n('framesDropped'),
            freezeCount: n('freezeCount'),
            totalFreezesDuration: n('totalFreezesDuration'),
            frameWidth: n('frameWidth'),
            pliCount: n('pliCount'),
            firCount: n('firCount'),
            nackCount: n('nackCount'),
            packetsLost: n('packetsLost'),
          });
        });
      }
    }
    return out;
  });
}

/** Sizes every video element of the page (adaptive stream reports the size to the SFU). */
export async function sizeVideoElements(page: Page, width: number, height: number): Promise<void> {
  await page.evaluate(
    ({ w, h }) => {
      for (const el of document.querySelectorAll('video')) {
        el.style.width = `${w}px`;
        el.style.height = `${h}px`;
        el.style.display = 'block';
      }
    },
    { w: width, h: height },
  );
}

/** One simulcast layer as its publisher's Chrome reports it (outbound-rtp). */
export interface OutboundLayer {
  packetsSent: number;
  bytesSent: number;
  framesEncoded: number;
  keyFramesEncoded: number;
  /** qualityLimitationReason ('none', 'bandwidth', 'cpu', …). */
  limitation: string;
  pliCount: number;
  nackCount: number;
}

/** The publisher's own view of its video: Chrome's bandwidth estimate and each rid's figures. */
export async function publisherVideoStats(page: Page): Promise<{ availableOutgoingBitrate: number; rids: Record<string, OutboundLayer> }> {
  return await page.evaluate(async () => {
    const room = window.testState.room as InstanceType<typeof window.LivekitClient.Room>;
    const out = { availableOutgoingBitrate: 0, rids: {} as Record<string, OutboundLayer> };
    for (const pub of room.localParticipant.videoTrackPublications.values()) {
      const sender = pub.track?.sender;
      if (!sender) continue;
      const report = await sender.getStats();
      report.forEach((s: Record<string, unknown>) => {
        if (s.type === 'candidate-pair' && s.nominated) out.availableOutgoingBitrate = Number(s.availableOutgoingBitrate ?? 0);
        if (s.type !== 'outbound-rtp' || typeof s.rid !== 'string') return;
        const n = (k: string) => Number(s[k] ?? 0);
        out.rids[s.rid] = {
          packetsSent: n('packetsSent'),
          bytesSent: n('bytesSent'),
          framesEncoded: n('framesEncoded'),
          keyFramesEncoded: n('keyFramesEncoded'),
          limitation: String(s.qualityLimitationReason ?? ''),
          pliCount: n('pliCount'),
          nackCount: n('nackCount'),
        };
      });
    }
    return out;
  });
}

export async function leaveFromPage(page: Page): Promise<void> {
  await page
    .evaluate(async () => {
      const room = window.testState.room as InstanceType<typeof window.LivekitClient.Room> | undefined;
      await room?.disconnect();
    })
    .catch(() => undefined);
}

/**
 * One browser test's SFU, pages and other cleanups (rtc-node clients, tones), ended together by
 * `end()` in afterEach: cleanups first (the last registered first), then, on failure, each page's last console lines are
 * printed, every page leaves its room and is closed, and the SFU is stopped.
 */
export interface BrowserScene {
  start(opts?: Parameters<typeof startTestSfu>[0]): Promise<TestSfu>;
  /** The SFU `start()` made. */
  readonly sfu: TestSfu;
  /** A new page in the shared Chromium. */
  page(): Promise<BrowserPage>;
  onEnd(cleanup: () => Promise<void>): void;
  end(failed: boolean): Promise<void>;
}

export function browserScene(): BrowserScene {
  let sfu: TestSfu | undefined;
  const pages: BrowserPage[] = [];
  const cleanups: (() => Promise<void>)[] = [];
  return {
    async start(opts) {
      sfu = await startTestSfu(opts);
      return sfu;
    },
    get sfu() {
      if (!sfu) throw new Error('browserScene: start() first');
      return sfu;
    },
    async page() {
      const page = await openBrowserPage();
      pages.push(page);
      return page;
    },
    onEnd(cleanup) {
      cleanups.push(cleanup);
    },
    async end(failed) {
      for (const cleanup of cleanups.splice(0).toReversed()) await cleanup();
      if (failed) {
        for (const p of pages) console.log(p.consoleLines.slice(-40).join('\n'));
      }
      for (const p of pages) await leaveFromPage(p.page);
      for (const p of pages.splice(0)) await p.close();
      await sfu?.stop();
      sfu = undefined;
    },
  };
}
