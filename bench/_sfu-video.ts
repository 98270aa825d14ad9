/**
 * The video room of the SFU benchmark: rtc-node publishers with simulcast VP8 (synthetic moving
 * frames), rtc-node subscribers (which ask for no particular size) and werift subscribers that
 * ask for a small, medium or large size with UpdateTrackSettings, as shrinking and growing video
 * elements do. Reports what the SFU takes in and forwards (packets/s, kbps per requested size)
 * and its CPU, as the median of fixed windows after a warm-up.
 */
import type { ChildProcess } from 'node:child_process';
import { ask, median, round, sleep, type SfuProcess } from './_sfu-procs.ts';
import { measureWindow, medianOf, type WindowResult } from './_sfu-measure.ts';

export interface VideoOptions {
  publishers: number;
  rtcNodeSubscribers: number;
  sizes: { label: string; width: number; height: number }[];
  video: { width: number; height: number; fps: number; maxBitrate: number };
  warmupMs: number;
  windowMs: number;
  windows: number;
  portRange: [number, number];
}

export interface VideoClients {
  publisher: ChildProcess;
  subscriber: ChildProcess;
  werift: ChildProcess;
}

interface WeriftVideoStats {
  subscribers: { label: string; packets: number; bytes: number; tracks: number }[];
}

export async function runVideoRoom(
  sfu: SfuProcess,
  clients: VideoClients,
  opts: VideoOptions,
  log: (line: string) => void,
): Promise<Record<string, unknown>> {
  const room = 'video';
  await ask(
    clients.publisher,
    {
      type: 'join',
      wsUrl: sfu.wsUrl,
      room,
      identities: Array.from({ length: opts.publishers }, (_, i) => `cam-${i}`),
      publish: 'video',
      video: opts.video,
      concurrency: 1,
    },
    60_000,
  );
  await ask(
    clients.subscriber,
    {
      type: 'join',
      wsUrl: sfu.wsUrl,
      room,
      identities: Array.from({ length: opts.rtcNodeSubscribers }, (_, i) => `viewer-${i}`),
      publish: 'none',
    },
    60_000,
  );
  await ask(clients.werift, { type: 'videoSubs', wsUrl: sfu.wsUrl, room, sizes: opts.sizes, portRange: opts.portRange }, 60_000);
  await sleep(opts.warmupMs);

  const clientPids = [clients.publisher, clients.subscriber, clients.werift].map((c) => c.pid!);
  const windows: WindowResult[] = [];
  const perSize: Record<string, { pps: number[]; kbps: number[]; tracks: number }> = {};
  for (let i = 0; i < opts.windows; i++) {
    const a = await ask<WeriftVideoStats>(clients.werift, { type: 'videoStats' });
    const t0 = performance.now();
    const w = await measureWindow(
      { sfuPid: sfu.pid, sfuUrl: sfu.url, publishers: [clients.publisher], subscribers: [clients.subscriber], clientPids },
      opts.windowMs,
    );
    const b = await ask<WeriftVideoStats>(clients.werift, { type: 'videoStats' });
    const s = (performance.now() - t0) / 1000;
    windows.push(w);
    // Sum the subscribers of one size label, then divide per subscriber.
    const bySize = new Map<string, { pps: number; kbps: number; n: number; tracks: number }>();
    b.subscribers.forEach((sb, k) => {
      const sa = a.subscribers[k];
      const e = bySize.get(sb.label) ?? { pps: 0, kbps: 0, n: 0, tracks: 0 };
      e.pps += (sb.packets - (sa?.packets ?? 0)) / s;
      e.kbps += ((sb.bytes - (sa?.bytes ?? 0)) * 8) / 1000 / s;
      e.n++;
      e.tracks = Math.max(e.tracks, sb.tracks);
      bySize.set(sb.label, e);
    });
    for (const [label, e] of bySize) {
      const entry = perSize[label] ?? { pps: [], kbps: [], tracks: 0 };
      entry.pps.push(e.pps / e.n);
      entry.kbps.push(e.kbps / e.n);
      entry.tracks = e.tracks;
      perSize[label] = entry;
    }
  }
  const med = medianOf(windows);
  let weriftPps = 0;
  for (const [label, e] of Object.entries(perSize)) weriftPps += median(e.pps) * opts.sizes.filter((z) => z.label === label).length;
  const forwardedPps = med.sfuMetricOutPps > 0 ? med.sfuMetricOutPps : round(med.receivedPps + weriftPps);
  const inPps = med.sfuMetricInPps > 0 ? med.sfuMetricInPps : med.publishedPps;
  const perSubscriberBySize = Object.fromEntries(
    Object.entries(perSize).map(([label, e]) => {
      const size = opts.sizes.find((z) => z.label === label)!;
      return [label, { requested: `${size.width}x${size.height}`, pps: round(median(e.pps)), kbps: round(median(e.kbps)), videoTracks: e.tracks }];
    }),
  );
  const result = {
    publishers: opts.publishers,
    publisherVideo: `${opts.video.width}x${opts.video.height} @ ${opts.video.fps} fps, simulcast, max ${opts.video.maxBitrate / 1000} kbps`,
    subscribers: { rtcNode: opts.rtcNodeSubscribers, weriftBySize: opts.sizes.map((z) => z.label) },
    inPps,
    forwardedPps,
    forwardedSource: med.sfuMetricOutPps > 0 ? 'sfu-metrics' : 'subscribers',
    sfuCpuPercent: med.sfuCpuPercent,
    usPerPacketInOut: forwardedPps + inPps > 0 ? round(((med.sfuCpuPercent / 100) / (forwardedPps + inPps)) * 1e6) : NaN,
    clientCpuPercent: med.clientCpuPercent,
    rtcNodeSubscriberKbps: opts.rtcNodeSubscribers ? round(med.receivedKbps / opts.rtcNodeSubscribers) : 0,
    rtcNodeSubscriberPps: opts.rtcNodeSubscribers ? round(med.receivedPps / opts.rtcNodeSubscribers) : 0,
    perSubscriberBySize,
    sfuRssMB: med.sfuRssMB,
    windows,
  };
  log(
    `video: in ${inPps} pps, forwarded ${forwardedPps} pps, SFU CPU ${med.sfuCpuPercent} %, clients ${med.clientCpuPercent} %; ` +
      `per size ${Object.entries(perSubscriberBySize)
        .map(([k, v]) => `${k} ${v.kbps} kbps`)
        .join(', ')}; rtc-node viewer ${result.rtcNodeSubscriberKbps} kbps`,
  );
  return result;
}
