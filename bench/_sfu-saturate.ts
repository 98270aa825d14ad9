/**
 * The saturation sweep of the SFU benchmark: cheap subscribers and paced publishers
 * (bench/_sfu-cheap-worker.ts) on one or two SFU processes ("targets": this tree, and with
 * `--against <ref>` the SFU of another commit). For each subscriber count the targets take turns,
 * the order flipping every step (A B, B A, …): the target's subscribers are topped up, its
 * publishers resumed (the other target's are paused, so only one SFU forwards at a time), a
 * warm-up, then several windows whose median is kept. Per step and target: forwarded packets/s
 * (the SFU's own counter), delivery (what the subscribers counted / what the publishers sent ×
 * subscribers), SFU CPU from /proc, µs of SFU CPU per forwarded packet, time a packet spends in
 * the SFU (its livekit_forward_latency_seconds histogram), sampled corruption, RSS.
 *
 * `perCoreAtSaturation` = forwarded packets/s ÷ (SFU CPU as a fraction of one core) at the
 * first step where the SFU used ≥ 90 % of a core with delivery ≥ 99 %; null (with the reason)
 * when no step got there. A target stops stepping once saturated; the sweep ends when every
 * target has, or the list or time budget runs out.
 */
import type { ChildProcess } from 'node:child_process';
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
  type SfuProcess,
} from './_sfu-procs.ts';
import { linearFit, machineJiffies } from './_sfu-measure.ts';

export interface SaturationTarget {
  label: string;
  sfu: SfuProcess;
}

export interface SaturationOptions {
  room: string;
  /** What the publishers send: Opus-sized audio or single-layer VP8 (bench/_sfu-cheap-worker.ts). */
  kind: 'audio' | 'video';
  publishers: number;
  steps: number[];
  warmupMs: number;
  windowMs: number;
  windows: number;
  sampleEvery: number;
  budgetMs: number;
  publisherPorts: [number, number];
  subscriberPorts: [number, number][];
}

export interface SaturationWorkers {
  publisher: ChildProcess;
  subscribers: ChildProcess[];
}

interface CheapStats {
  atMs: number;
  inPackets: number;
  inBytes: number;
  sampled: number;
  corrupt: number;
  foreign: number;
  subscribers: number;
  ages: { samples: number; p50Ms: number; p99Ms: number } | null;
}

export interface SaturationStep {
  /** The step's subscriber count; `connectedSubscribers` of them connected. */
  subscribers: number;
  connectedSubscribers: number;
  participants: number;
  /** Publishers' packets the SFU received × subscribers: what the subscribers should get. */
  expectedPps: number;
  /** Nominal input (publishers × their packets/s); below it, the publishers' process was starved. */
  nominalInPps: number;
  incomingPps: number;
  forwardedPps: number;
  receivedPps: number;
  deliveryRatio: number;
  sfuCpuPercent: number;
  loadCpuPercent: number;
  machineCpuPercent: number;
  usPerForwardedPacket: number;
  /** Forwarded pps per core of SFU CPU at this step (a projection below saturation). */
  ppsPerCore: number;
  timeInSfuMs: { p50: number; p99: number; count: number } | null;
  /** Publisher stamp → subscriber receipt (wall clock, includes both clients' werift). */
  endToEndMs: { p50: number; p99: number } | null;
  sampledChecked: number;
  sampledCorrupt: number;
  /** Datagrams at the subscribers' sockets from someone other than the SFU (ignored). */
  foreignDatagrams: number;
  sfuRssMB: number;
}

export interface SaturationResult {
  label: string;
  steps: SaturationStep[];
  perCoreAtSaturation: number | null;
  saturationStep: number | null;
  whyNoSaturation?: string;
  /** The step nearest to half a core of SFU CPU, for the latency goal. */
  atHalfCore: { subscribers: number; sfuCpuPercent: number; timeInSfuP99Ms: number | null } | null;
  rssPerParticipantMB: number;
  monoWindows: [number, number][];
}

/** Packets a second one cheap publisher sends (bench/_sfu-cheap-worker.ts). */
const PACKETS_PER_SECOND = { audio: 50, video: 75 } as const;
const cpuOf = (pids: number[]) => pids.reduce((sum, pid) => sum + (sampleProc(pid)?.cpuS ?? 0), 0);
const monoUs = () => Number(process.hrtime.bigint() / 1000n);

async function cheapStats(
  workers: ChildProcess[],
  group: string,
): Promise<Omit<CheapStats, 'ages' | 'atMs'> & { ages: CheapStats['ages'][]; perWorker: { atMs: number; inPackets: number }[] }> {
  const all = await Promise.all(workers.map((w) => ask<CheapStats>(w, { type: 'stats', group }, 30_000)));
  return {
    perWorker: all.map((x) => ({ atMs: x.atMs, inPackets: x.inPackets })),
    inPackets: all.reduce((n, s) => n + s.inPackets, 0),
    inBytes: all.reduce((n, s) => n + s.inBytes, 0),
    sampled: all.reduce((n, s) => n + s.sampled, 0),
    corrupt: all.reduce((n, s) => n + s.corrupt, 0),
    foreign: all.reduce((n, s) => n + s.foreign, 0),
    subscribers: all.reduce((n, s) => n + s.subscribers, 0),
    ages: all.map((s) => s.ages),
  };
}

interface Window {
  seconds: number;
  /** Subscribers whose PC connected (failed joins are left out). */
  connected: number;
  mono: [number, number];
  sfuCpuPercent: number;
  loadCpuPercent: number;
  machineCpuPercent: number;
  forwardedPps: number;
  /** RTP the SFU received from the publishers (its own counter, the latency probe excluded). */
  incomingPps: number;
  receivedPps: number;
  hist: { p50: number; p99: number; count: number } | null;
  e2e: { p50: number; p99: number } | null;
  checked: number;
  corrupt: number;
  foreign: number;
  rssMB: number;
}

async function window(target: SaturationTarget, workers: SaturationWorkers, group: string, ms: number): Promise<Window> {
  const loadPids = [workers.publisher, ...workers.subscribers].map((c) => c.pid!);
  const snap = async () => {
    const [subs, metrics] = await Promise.all([cheapStats(workers.subscribers, group), scrapeMetrics(target.sfu.url)]);
    return { subs, metrics, sfu: sampleProc(target.sfu.pid), load: cpuOf(loadPids), machine: machineJiffies(), at: performance.now(), mono: monoUs() };
  };
  const a = await snap();
  await sleep(ms);
  const b = await snap();
  const s = (b.at - a.at) / 1000;
  const out = (m: Map<string, number>) => metricSum(m, 'livekit_packet_total', ['direction="outgoing"']);
  const inc = (m: Map<string, number>) => metricSum(m, 'livekit_packet_total', ['direction="incoming"']);
  const name = 'livekit_forward_latency_seconds';
  const count = metricSum(b.metrics, `${name}_count`) - metricSum(a.metrics, `${name}_count`);
  const before = histogramBuckets(a.metrics, name);
  const after = histogramBuckets(b.metrics, name);
  const ages = b.subs.ages.filter((x) => x !== null);
  return {
    seconds: s,
    connected: b.subs.subscribers,
    mono: [a.mono, b.mono],
    sfuCpuPercent: (((b.sfu?.cpuS ?? 0) - (a.sfu?.cpuS ?? 0)) / s) * 100,
    loadCpuPercent: ((b.load - a.load) / s) * 100,
    machineCpuPercent: ((b.machine.busy - a.machine.busy) / Math.max(1, b.machine.total - a.machine.total)) * cpus().length * 100,
    forwardedPps: (out(b.metrics) - out(a.metrics)) / s,
    incomingPps: (inc(b.metrics) - inc(a.metrics)) / s,
    // Each worker's count over its own read times (the IPC round trips differ from the SFU scrape's).
    receivedPps: b.subs.perWorker.reduce((sum, bw, i) => {
      const aw = a.subs.perWorker[i]!;
      return sum + (bw.inPackets - aw.inPackets) / Math.max(0.001, (bw.atMs - aw.atMs) / 1000);
    }, 0),
    hist:
      count > 0
        ? {
            p50: round((histogramQuantile(before, after, 0.5) ?? 0) * 1000, 3),
            p99: round((histogramQuantile(before, after, 0.99) ?? 0) * 1000, 3),
            count,
          }
        : null,
    e2e: ages.length ? { p50: round(median(ages.map((x) => x.p50Ms)), 3), p99: round(Math.max(...ages.map((x) => x.p99Ms)), 3) } : null,
    checked: b.subs.sampled - a.subs.sampled,
    corrupt: b.subs.corrupt - a.subs.corrupt,
    foreign: b.subs.foreign - a.subs.foreign,
    rssMB: (b.sfu?.rssBytes ?? 0) / 2 ** 20,
  };
}

function summarise(target: number, publishers: number, nominalInPps: number, ws: Window[]): SaturationStep {
  const pick = (f: (w: Window) => number) => median(ws.map(f));
  const subscribers = ws.at(-1)?.connected ?? target;
  const incomingPps = pick((w) => w.incomingPps);
  const expectedPps = incomingPps * subscribers;
  const forwardedPps = pick((w) => w.forwardedPps) || pick((w) => w.receivedPps);
  const sfuCpu = pick((w) => w.sfuCpuPercent);
  const hists = ws.map((w) => w.hist).filter((h) => h !== null);
  const e2e = ws.map((w) => w.e2e).filter((h) => h !== null);
  return {
    subscribers: target,
    connectedSubscribers: subscribers,
    participants: publishers + subscribers,
    expectedPps: round(expectedPps),
    nominalInPps,
    incomingPps: round(incomingPps),
    forwardedPps: round(forwardedPps),
    receivedPps: round(pick((w) => w.receivedPps)),
    deliveryRatio: expectedPps > 0 ? round(pick((w) => w.receivedPps) / expectedPps, 3) : 0,
    sfuCpuPercent: round(sfuCpu),
    loadCpuPercent: round(pick((w) => w.loadCpuPercent)),
    machineCpuPercent: round(pick((w) => w.machineCpuPercent)),
    usPerForwardedPacket: forwardedPps > 0 ? round(((sfuCpu / 100) / forwardedPps) * 1e6, 2) : NaN,
    ppsPerCore: sfuCpu > 0 ? Math.round(forwardedPps / (sfuCpu / 100)) : 0,
    timeInSfuMs: hists.length
      ? { p50: round(median(hists.map((h) => h.p50)), 3), p99: round(median(hists.map((h) => h.p99)), 3), count: hists.reduce((n, h) => n + h.count, 0) }
      : null,
    endToEndMs: e2e.length ? { p50: round(median(e2e.map((h) => h.p50)), 3), p99: round(median(e2e.map((h) => h.p99)), 3) } : null,
    sampledChecked: ws.reduce((n, w) => n + w.checked, 0),
    sampledCorrupt: ws.reduce((n, w) => n + w.corrupt, 0),
    foreignDatagrams: ws.reduce((n, w) => n + w.foreign, 0),
    sfuRssMB: round(pick((w) => w.rssMB)),
  };
}

/** Runs the sweep over every target; see the file comment. */
export async function runSaturation(
  targets: SaturationTarget[],
  workers: SaturationWorkers,
  opts: SaturationOptions,
  log: (line: string) => void,
): Promise<SaturationResult[]> {
  const started = Date.now();
  // Each target's clients get their own slice of every port range: werift scans a range from its
  // start, and two peer connections ending up on one port (within a process too) steal each
  // other's datagrams (counted in the wrong group, consent checks lost).
  const slice = (r: [number, number], k: number): [number, number] => {
    const size = Math.floor((r[1] - r[0] + 1) / targets.length);
    return [r[0] + k * size, r[0] + (k + 1) * size - 1];
  };
  const state = targets.map((t, k) => ({
    publisherPorts: slice(opts.publisherPorts, k),
    subscriberPorts: opts.subscriberPorts.map((r) => slice(r, k)),
    target: t,
    group: t.label,
    room: `${opts.room}-${t.label}`,
    joined: 0,
    steps: [] as SaturationStep[],
    mono: [] as [number, number][],
    done: false,
    toldStarved: false,
  }));
  for (const s of state) {
    await ask(
      workers.publisher,
      {
        type: 'publish',
        group: s.group,
        wsUrl: s.target.sfu.wsUrl,
        room: s.room,
        identities: Array.from({ length: opts.publishers }, (_, i) => `${s.room}-pub-${i}`),
        portRange: s.publisherPorts,
        kind: opts.kind,
      },
      120_000,
    );
  }
  let order = state;
  for (const target of opts.steps) {
    if (Date.now() - started > opts.budgetMs) {
      log(`saturation sweep: time budget (${Math.round(opts.budgetMs / 1000)} s) reached`);
      break;
    }
    for (const s of order) {
      if (s.done) continue;
      const perWorker: string[][] = workers.subscribers.map(() => []);
      for (let i = s.joined; i < target; i++) perWorker[i % perWorker.length]!.push(`${s.room}-sub-${i}`);
      const joinStart = performance.now();
      await Promise.all(
        workers.subscribers.map((w, i) =>
          perWorker[i]!.length
            ? ask<{ failures: string[] }>(
                w,
                {
                  type: 'join',
                  group: s.group,
                  wsUrl: s.target.sfu.wsUrl,
                  room: s.room,
                  identities: perWorker[i],
                  portRange: s.subscriberPorts[i],
                  sampleEvery: opts.sampleEvery,
                  concurrency: 4,
                },
                300_000,
              ).then((r) => {
                for (const f of r.failures.slice(0, 3)) log(`[${s.target.label}] subscriber join failed: ${f}`);
              })
            : Promise.resolve(),
        ),
      );
      s.joined = target;
      const joinSeconds = round((performance.now() - joinStart) / 1000);
      await ask(workers.publisher, { type: 'resume', group: s.group });
      await sleep(opts.warmupMs);
      const ws: Window[] = [];
      for (let w = 0; w < opts.windows; w++) ws.push(await window(s.target, workers, s.group, opts.windowMs));
      await ask(workers.publisher, { type: 'pause', group: s.group });
      for (const w of ws) s.mono.push(w.mono);
      const step = summarise(target, opts.publishers, opts.publishers * PACKETS_PER_SECOND[opts.kind], ws);
      s.steps.push(step);
      log(
        `[${s.target.label} ${opts.kind}] S=${target} (${step.connectedSubscribers} connected): in ${step.incomingPps}/${step.nominalInPps} pps, forwarded ${step.forwardedPps} pps (delivery ${step.deliveryRatio}), SFU ${step.sfuCpuPercent} %, ` +
          `${step.usPerForwardedPacket} µs/fwd pkt (${step.ppsPerCore} pps/core), load ${step.loadCpuPercent} %, machine ${step.machineCpuPercent} %, ` +
          `in-SFU p50/p99 ${step.timeInSfuMs?.p50 ?? '-'}/${step.timeInSfuMs?.p99 ?? '-'} ms, corrupt ${step.sampledCorrupt}/${step.sampledChecked}, foreign ${step.foreignDatagrams}, ` +
          `RSS ${step.sfuRssMB} MB (joins ${joinSeconds} s)`,
      );
      if (step.incomingPps < 0.9 * step.nominalInPps && !s.toldStarved) {
        // Publishers stopped or were starved: what the SFU said about it (BENCH_SFU_LOG_LEVEL=info says more).
        s.toldStarved = true;
        log(`[${s.target.label} ${opts.kind}] input below 90 % of nominal; the SFU's last output:\n${s.target.sfu.tail().slice(-3000)}`);
      }
      // Past saturation, or losing a fifth of the packets (the load, or the machine, gave out).
      if (step.sfuCpuPercent >= 90 || step.deliveryRatio < 0.8) s.done = true;
    }
    if (state.every((s) => s.done)) break;
    order = order.toReversed();
    // Let the paused SFU's queues drain before the other one is measured.
    await sleep(500);
  }
  return state.map((s) => result(s.target.label, s.steps, s.mono));
}

function result(label: string, steps: SaturationStep[], monoWindows: [number, number][]): SaturationResult {
  const sat = steps.find((st) => st.sfuCpuPercent >= 90 && st.deliveryRatio >= 0.99);
  const best = steps.toSorted((a, b) => b.forwardedPps - a.forwardedPps)[0];
  const half = steps.toSorted((a, b) => Math.abs(a.sfuCpuPercent - 50) - Math.abs(b.sfuCpuPercent - 50))[0];
  const fit = linearFit(steps.map((st) => ({ x: st.participants, y: st.sfuRssMB })));
  let why: string | undefined;
  if (!sat) {
    why = !best
      ? 'no step was measured'
      : best.sfuCpuPercent < 90
        ? `the SFU reached at most ${best.sfuCpuPercent} % of a core (delivery ${best.deliveryRatio}); more subscribers were needed or the load could not keep up`
        : `at ≥ 90 % of a core delivery was below 99 % (${steps.find((st) => st.sfuCpuPercent >= 90)?.deliveryRatio})`;
  }
  return {
    label,
    steps,
    perCoreAtSaturation: sat ? sat.ppsPerCore : null,
    saturationStep: sat ? sat.subscribers : null,
    ...(why ? { whyNoSaturation: why } : {}),
    atHalfCore: half ? { subscribers: half.subscribers, sfuCpuPercent: half.sfuCpuPercent, timeInSfuP99Ms: half.timeInSfuMs?.p99 ?? null } : null,
    rssPerParticipantMB: round(fit.slope, 3),
    monoWindows,
  };
}

/** Per step, each figure of B over A (B / A), for the steps both measured. */
export function ratios(a: SaturationResult, b: SaturationResult): { subscribers: number; usPerForwardedPacket: number; ppsPerCore: number; timeInSfuP99: number | null }[] {
  const out = [];
  for (const sa of a.steps) {
    const sb = b.steps.find((x) => x.subscribers === sa.subscribers);
    if (!sb) continue;
    out.push({
      subscribers: sa.subscribers,
      usPerForwardedPacket: round(sb.usPerForwardedPacket / sa.usPerForwardedPacket, 3),
      ppsPerCore: round(sb.ppsPerCore / sa.ppsPerCore, 3),
      timeInSfuP99: sa.timeInSfuMs && sb.timeInSfuMs ? round(sb.timeInSfuMs.p99 / sa.timeInSfuMs.p99, 3) : null,
    });
  }
  return out;
}
