/**
 * Measurement windows for the SFU benchmark: CPU time (utime+stime from /proc) of the SFU and of
 * the client processes, RTP counts from the rtc-node workers (libwebrtc stats), the SFU's own
 * /metrics counters when they are populated, and the time window in the monotonic clock (so a
 * CPU profile can be cut to the same windows). Several windows per step; the median is reported.
 */
import type { ChildProcess } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { cpus } from 'node:os';
import {
  ask,
  histogramBuckets,
  histogramQuantile,
  median,
  metricSum,
  round,
  sampleProc,
  scrapeMetrics,
  sleep,
  type MetricSnapshot,
} from './_sfu-procs.ts';

export interface RtcStats {
  inPackets: number;
  inBytes: number;
  outPackets: number;
  inStreams: number;
  framesDecoded: number;
  rooms: number;
}

export interface WindowResult {
  seconds: number;
  /** Monotonic clock, microseconds (CLOCK_MONOTONIC, as V8 profiles use). */
  monoStartUs: number;
  monoEndUs: number;
  sfuCpuPercent: number;
  clientCpuPercent: number;
  /** Whole machine, percent of one core (so up to 100 × cores); includes other people's work. */
  machineCpuPercent: number;
  /** RTP packets/s the subscribers received (libwebrtc inbound-rtp). */
  receivedPps: number;
  receivedKbps: number;
  /** RTP packets/s the publishers sent (into the SFU). */
  publishedPps: number;
  /** livekit_packet_total{direction=outgoing} rate; 0 while the SFU does not count. */
  sfuMetricOutPps: number;
  sfuMetricInPps: number;
  /** livekit_forward_latency_seconds from /metrics over the window, when populated. */
  sfuHistogramLatencyMs?: { p50: number; p99: number; count: number };
  sfuRssMB: number;
}

async function sumStats(workers: ChildProcess[]): Promise<RtcStats> {
  const all = await Promise.all(workers.map((w) => ask<RtcStats>(w, { type: 'stats' }, 30_000)));
  const total: RtcStats = { inPackets: 0, inBytes: 0, outPackets: 0, inStreams: 0, framesDecoded: 0, rooms: 0 };
  for (const s of all) {
    total.inPackets += s.inPackets;
    total.inBytes += s.inBytes;
    total.outPackets += s.outPackets;
    total.inStreams += s.inStreams;
    total.framesDecoded += s.framesDecoded;
    total.rooms += s.rooms;
  }
  return total;
}

/** Busy and total jiffies of the whole machine (all cores), from /proc/stat. */
export function machineJiffies(): { busy: number; total: number } {
  const line = readFileSync('/proc/stat', 'utf8').split('\n')[0] ?? '';
  const f = line.trim().split(/\s+/).slice(1).map(Number);
  const total = f.slice(0, 8).reduce((a, b) => a + b, 0);
  const idle = (f[3] ?? 0) + (f[4] ?? 0);
  return { busy: total - idle, total };
}

const cpuOf = (pids: number[]) => pids.reduce((sum, pid) => sum + (sampleProc(pid)?.cpuS ?? 0), 0);
const monoUs = () => Number(process.hrtime.bigint() / 1000n);

export interface WindowSetup {
  sfuPid: number;
  sfuUrl: string;
  /** rtc-node workers that publish (their sent packets go into the SFU). */
  publishers: ChildProcess[];
  /** rtc-node workers that subscribe. */
  subscribers: ChildProcess[];
  /** Every client process, for their CPU. */
  clientPids: number[];
}

export async function measureWindow(setup: WindowSetup, windowMs: number): Promise<WindowResult> {
  const snap = async () => {
    const [subs, pubs, metrics] = await Promise.all([
      sumStats(setup.subscribers),
      sumStats(setup.publishers),
      scrapeMetrics(setup.sfuUrl),
    ]);
    const sfu = sampleProc(setup.sfuPid);
    return { subs, pubs, metrics, sfu, clients: cpuOf(setup.clientPids), machine: machineJiffies(), at: performance.now(), mono: monoUs() };
  };
  const a = await snap();
  await sleep(windowMs);
  const b = await snap();
  const s = (b.at - a.at) / 1000;
  const rate = (x: number, y: number) => (y - x) / s;
  const out = (m: MetricSnapshot, dir: string) => metricSum(m, 'livekit_packet_total', [`direction="${dir}"`]);
  const result: WindowResult = {
    seconds: round(s, 2),
    monoStartUs: a.mono,
    monoEndUs: b.mono,
    sfuCpuPercent: round((((b.sfu?.cpuS ?? 0) - (a.sfu?.cpuS ?? 0)) / s) * 100),
    clientCpuPercent: round(((b.clients - a.clients) / s) * 100),
    machineCpuPercent: round(((b.machine.busy - a.machine.busy) / Math.max(1, b.machine.total - a.machine.total)) * cpus().length * 100),
    receivedPps: round(rate(a.subs.inPackets, b.subs.inPackets)),
    receivedKbps: round((rate(a.subs.inBytes, b.subs.inBytes) * 8) / 1000),
    publishedPps: round(rate(a.pubs.outPackets, b.pubs.outPackets)),
    sfuMetricOutPps: round(rate(out(a.metrics, 'outgoing'), out(b.metrics, 'outgoing'))),
    sfuMetricInPps: round(rate(out(a.metrics, 'incoming'), out(b.metrics, 'incoming'))),
    sfuRssMB: round((b.sfu?.rssBytes ?? 0) / 2 ** 20),
  };
  const name = 'livekit_forward_latency_seconds';
  const before = histogramBuckets(a.metrics, name);
  const after = histogramBuckets(b.metrics, name);
  const count = metricSum(b.metrics, `${name}_count`) - metricSum(a.metrics, `${name}_count`);
  if (count > 0) {
    result.sfuHistogramLatencyMs = {
      p50: round((histogramQuantile(before, after, 0.5) ?? 0) * 1000, 3),
      p99: round((histogramQuantile(before, after, 0.99) ?? 0) * 1000, 3),
      count,
    };
  }
  return result;
}

/** Median of each numeric field over the windows (the windows' own list is kept separately). */
export function medianOf(windows: WindowResult[]): Omit<WindowResult, 'monoStartUs' | 'monoEndUs' | 'sfuHistogramLatencyMs'> {
  const pick = (f: (w: WindowResult) => number) => round(median(windows.map(f)));
  return {
    seconds: pick((w) => w.seconds),
    sfuCpuPercent: pick((w) => w.sfuCpuPercent),
    clientCpuPercent: pick((w) => w.clientCpuPercent),
    machineCpuPercent: pick((w) => w.machineCpuPercent),
    receivedPps: pick((w) => w.receivedPps),
    receivedKbps: pick((w) => w.receivedKbps),
    publishedPps: pick((w) => w.publishedPps),
    sfuMetricOutPps: pick((w) => w.sfuMetricOutPps),
    sfuMetricInPps: pick((w) => w.sfuMetricInPps),
    sfuRssMB: pick((w) => w.sfuRssMB),
  };
}

/** Least-squares slope and intercept of y on x. */
export function linearFit(points: { x: number; y: number }[]): { slope: number; intercept: number } {
  const n = points.length;
  if (n < 2) return { slope: NaN, intercept: NaN };
  const mx = points.reduce((s, p) => s + p.x, 0) / n;
  const my = points.reduce((s, p) => s + p.y, 0) / n;
  let num = 0;
  let den = 0;
  for (const p of points) {
    num += (p.x - mx) * (p.y - my);
    den += (p.x - mx) ** 2;
  }
  const slope = den > 0 ? num / den : NaN;
  return { slope, intercept: my - slope * mx };
}
