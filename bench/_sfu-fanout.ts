/**
 * The audio fan-out sweep of the SFU benchmark, on an SFU process someone else started: P
 * rtc-node publishers (tones, 20 ms Opus frames) in one worker, subscribers spread over several
 * rtc-node workers, added in steps; per step a warm-up, then several fixed windows whose median
 * is kept. The werift latency probe (its own room on the same SFU) is sampled over each step's
 * windows. The sweep stops at the first of: the SFU reaching `saturatePercent` of one core, the
 * clients falling behind (delivery below 90 % or the machine's cores busy), the step list's end,
 * or the time budget. Also measures join time (token → first decoded remote audio frame).
 */
import type { ChildProcess } from 'node:child_process';
import { cpus } from 'node:os';
import { ask, median, percentile, round, sleep, type SfuProcess } from './_sfu-procs.ts';
import { linearFit, measureWindow, medianOf, type WindowResult } from './_sfu-measure.ts';

export interface FanoutOptions {
  room: string;
  /** Which client library the subscribers are (reported with the figures). */
  subscriberKind: 'rtc-node' | 'werift';
  /** Per subscriber worker, for werift workers (each needs its own UDP range). */
  subscriberPortRanges?: [number, number][];
  publishers: number;
  steps: number[];
  warmupMs: number;
  windowMs: number;
  windows: number;
  saturatePercent: number;
  budgetMs: number;
  joinProbes: number;
}

export interface LatencyFigures {
  samples: number;
  p50Ms: number;
  p99Ms: number;
  maxMs: number;
}

export interface FanoutStep {
  subscribers: number;
  participants: number;
  expectedPps: number;
  /** Forwarded packets/s: the SFU's own counter when it counts, else what subscribers received. */
  forwardedPps: number;
  forwardedSource: 'sfu-metrics' | 'subscribers';
  deliveryRatio: number;
  usPerForwardedPacket: number;
  /** CPU per packet handled (in + out), as in werift-and-machine-notes.md §3. */
  usPerPacketInOut: number;
  median: ReturnType<typeof medianOf>;
  latencyThroughSfu?: LatencyFigures;
  sfuHistogramLatencyMs?: WindowResult['sfuHistogramLatencyMs'];
  windows: WindowResult[];
  joinSeconds: number;
}

export interface FanoutResult {
  steps: FanoutStep[];
  stoppedBecause: string;
  subscriberKind: FanoutOptions['subscriberKind'];
  joinTime?: { samples: number; medianMs: number; p90Ms: number; medianConnectMs: number; medianSubscribedMs: number; all: number[] };
  rssPerParticipantMB: number;
  rssInterceptMB: number;
  /** Monotonic windows (µs) of the steady-state measurements, for cutting the CPU profile. */
  monoWindows: [number, number][];
}

export interface FanoutClients {
  publisher: ChildProcess;
  subscribers: ChildProcess[];
  latency: ChildProcess;
}

const FRAMES_PER_SECOND = 50; // 20 ms Opus frames

export async function runFanout(
  sfu: SfuProcess,
  clients: FanoutClients,
  opts: FanoutOptions,
  log: (line: string) => void,
): Promise<FanoutResult> {
  const started = Date.now();
  const room = opts.room;
  const clientPids = [clients.publisher, ...clients.subscribers, clients.latency].map((c) => c.pid!);

  await ask(
    clients.publisher,
    {
      type: 'join',
      wsUrl: sfu.wsUrl,
      room,
      identities: Array.from({ length: opts.publishers }, (_, i) => `${room}-pub-${i}`),
      publish: 'audio',
    },
    60_000,
  );

  // Join time, while the SFU carries only the publishers.
  const probes: { connectMs: number; subscribedMs: number; firstFrameMs: number }[] = [];
  for (let i = 0; i < opts.joinProbes; i++) {
    probes.push(
      await ask(clients.subscribers[0]!, { type: 'joinProbe', wsUrl: sfu.wsUrl, room, identities: [`probe-${i}`] }, 30_000),
    );
  }
  const firstFrames = probes.map((p) => p.firstFrameMs);
  const joinTime = probes.length === 0 ? undefined : {
    samples: probes.length,
    medianMs: round(median(firstFrames)),
    p90Ms: round(percentile(firstFrames, 90)),
    medianConnectMs: round(median(probes.map((p) => p.connectMs))),
    medianSubscribedMs: round(median(probes.map((p) => p.subscribedMs))),
    all: firstFrames.map((x) => round(x)),
  };
  if (joinTime) log(`join time (token → first remote audio frame): median ${joinTime.medianMs} ms over ${probes.length}`);

  const steps: FanoutStep[] = [];
  const monoWindows: [number, number][] = [];
  let joined = 0;
  let stoppedBecause = 'step list exhausted';
  const cores = cpus().length;
  for (const target of opts.steps) {
    if (Date.now() - started > opts.budgetMs) {
      stoppedBecause = `time budget (${Math.round(opts.budgetMs / 1000)} s) reached`;
      break;
    }
    const joinStart = performance.now();
    // Spread the new subscribers over the workers, joined in parallel.
    const perWorker: string[][] = clients.subscribers.map(() => []);
    for (let i = joined; i < target; i++) perWorker[i % perWorker.length]!.push(`${room}-sub-${i}`);
    await Promise.all(
      clients.subscribers.map((w, i) =>
        perWorker[i]!.length
          ? ask(
              w,
              {
                type: 'join',
                wsUrl: sfu.wsUrl,
                room,
                identities: perWorker[i],
                publish: 'none',
                concurrency: 3,
                portRange: opts.subscriberPortRanges?.[i],
              },
              120_000,
            )
          : Promise.resolve(),
      ),
    );
    joined = target;
    const joinSeconds = (performance.now() - joinStart) / 1000;
    await sleep(opts.warmupMs);

    const latencyPromise = ask<LatencyFigures>(
      clients.latency,
      { type: 'latencyCollect', durationMs: opts.windows * opts.windowMs },
      opts.windows * opts.windowMs + 60_000,
    );
    const windows: WindowResult[] = [];
    for (let w = 0; w < opts.windows; w++) {
      windows.push(
        await measureWindow(
          { sfuPid: sfu.pid, sfuUrl: sfu.url, publishers: [clients.publisher], subscribers: clients.subscribers, clientPids },
          opts.windowMs,
        ),
      );
    }
    const latency = await latencyPromise.catch(() => undefined);
    for (const w of windows) monoWindows.push([w.monoStartUs, w.monoEndUs]);
    const med = medianOf(windows);
    const expectedPps = opts.publishers * FRAMES_PER_SECOND * target;
    const useMetric = med.sfuMetricOutPps > 0;
    const forwardedPps = useMetric ? med.sfuMetricOutPps : med.receivedPps;
    const cpuS = med.sfuCpuPercent / 100;
    const inPps = med.sfuMetricInPps > 0 ? med.sfuMetricInPps : med.publishedPps;
    const hist = windows.map((w) => w.sfuHistogramLatencyMs).filter((h) => h !== undefined);
    const step: FanoutStep = {
      subscribers: target,
      participants: opts.publishers + target + 2,
      expectedPps,
      forwardedPps,
      forwardedSource: useMetric ? 'sfu-metrics' : 'subscribers',
      deliveryRatio: round(med.receivedPps / expectedPps, 3),
      usPerForwardedPacket: forwardedPps > 0 ? round((cpuS / forwardedPps) * 1e6) : NaN,
      usPerPacketInOut: forwardedPps > 0 ? round((cpuS / (forwardedPps + inPps)) * 1e6) : NaN,
      median: med,
      ...(latency ? { latencyThroughSfu: { samples: latency.samples, p50Ms: latency.p50Ms, p99Ms: latency.p99Ms, maxMs: latency.maxMs } } : {}),
      ...(hist.length
        ? {
            sfuHistogramLatencyMs: {
              p50: round(median(hist.map((h) => h.p50)), 3),
              p99: round(median(hist.map((h) => h.p99)), 3),
              count: hist.reduce((n, h) => n + h.count, 0),
            },
          }
        : {}),
      windows,
      joinSeconds: round(joinSeconds, 1),
    };
    steps.push(step);
    log(
      `${opts.subscriberKind} S=${target}: forwarded ${forwardedPps} pps (${step.forwardedSource}; received ${med.receivedPps}, expected ${expectedPps}), ` +
        `SFU CPU ${med.sfuCpuPercent} %, ${step.usPerForwardedPacket} µs/fwd pkt, clients ${med.clientCpuPercent} %, ` +
        `machine ${med.machineCpuPercent} %, RSS ${med.sfuRssMB} MB, latency p50/p99 ${latency?.p50Ms ?? '-'}/${latency?.p99Ms ?? '-'} ms (joins took ${step.joinSeconds} s)`,
    );
    if (med.sfuCpuPercent >= opts.saturatePercent) {
      stoppedBecause = `SFU saturated one core (${med.sfuCpuPercent} % ≥ ${opts.saturatePercent} %)`;
      break;
    }
    const others = round(Math.max(0, med.machineCpuPercent - med.sfuCpuPercent - med.clientCpuPercent));
    const cpuSplit = `SFU ${med.sfuCpuPercent} %, clients ${med.clientCpuPercent} %, other processes ${others} % of ${cores * 100} %`;
    const ours = med.sfuCpuPercent + med.clientCpuPercent;
    if (ours >= cores * 100 * 0.9 || step.deliveryRatio < 0.9) {
      const what =
        step.deliveryRatio < 0.9
          ? `delivery fell to ${Math.round(step.deliveryRatio * 100)} % of the expected packets`
          : 'the SFU and its clients use the machine';
      const who =
        med.clientCpuPercent >= 90
          ? 'client processes are the bottleneck'
          : others >= 30
            ? 'the machine is shared: other processes took the CPU'
            : 'SFU or clients starved';
      stoppedBecause = `${what}; ${who} (${cpuSplit})`;
      break;
    }
  }
  const last = steps.at(-1);
  if (stoppedBecause === 'step list exhausted' && last && last.median.machineCpuPercent >= cores * 100 * 0.9) {
    stoppedBecause += `; the machine was saturated at the last step (machine ${last.median.machineCpuPercent} % of ${cores * 100} %: SFU ${last.median.sfuCpuPercent} %, clients ${last.median.clientCpuPercent} %)`;
  }
  const fit = linearFit(steps.map((s) => ({ x: s.participants, y: s.median.sfuRssMB })));
  return {
    subscriberKind: opts.subscriberKind,
    steps,
    stoppedBecause,
    joinTime,
    rssPerParticipantMB: round(fit.slope, 2),
    rssInterceptMB: round(fit.intercept, 1),
    monoWindows,
  };
}
