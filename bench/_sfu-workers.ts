/**
 * `npm run bench -- sfu --workers 1,2`: what media worker threads (`workers: N`,
 * docs/media-workers.md) do to the SFU's CPU at the same offered load. For each scenario one SFU
 * process per worker count runs side by side (`node sfu/main.ts --workers N`), all loaded by the
 * same cheap clients (bench/_sfu-cheap-worker.ts); rounds alternate between them (the order
 * flipping every round) and only the SFU being measured gets packets, the others' publishers
 * being paused. Scenarios:
 * - `bigRoom`: one room, a few audio publishers, optionally a video one (single-layer VP8, 75
 *   packets/s, from a second publisher process: a cheap client sends one kind), and many
 *   subscribers, `worker_placement: spread` (the room spans every worker, so every track is
 *   relayed once to the other worker);
 * - `smallRooms`: many three-party rooms, `worker_placement: pack` (a room stays on one worker,
 *   no relays). A cheap client either publishes or subscribes, so a three-party room is three
 *   publishers and two listeners: six forwarded streams, as in a real three-way call.
 * Per window and SFU: CPU of every thread of the SFU process from /proc/<pid>/task/<tid>/stat
 * (utime+stime). The main thread is the one whose tid is the pid; media workers are found by
 * their name (Node gives a worker thread its `name`, `media-<i>`, as the OS thread name); the
 * rest (V8 platform workers, libuv pool, inspector) is reported together as `other`. Each
 * worker's own figure (`matrixrtc_sfu_worker_cpu_seconds`, process.threadCpuUsage() pushed once
 * a second) is read alongside as a cross-check. Forwarded packets are the SFU's
 * `livekit_packet_total{direction="outgoing"}`; CPU per packet is the whole process's CPU over
 * them. Figures are medians over the rounds; ratios are of those medians, N workers ÷ 1 worker.
 */
import type { ChildProcess } from 'node:child_process';
import { readFileSync, readdirSync } from 'node:fs';
import { cpus, loadavg } from 'node:os';
import { ask, forkWorker, median, metricSum, round, sampleProc, scrapeMetrics, sleep, startSfuProcess, stopChild, type ProcessSet, type SfuProcess } from './_sfu-procs.ts';
import { machineJiffies } from './_sfu-measure.ts';

const CLK_TCK = 100;
/** Packets a second one cheap publisher sends (bench/_sfu-cheap-worker.ts). */
const PPS = { audio: 50, video: 75 } as const;

export interface WorkersBenchOptions {
  counts: number[];
  rounds: number;
  warmupMs: number;
  windowMs: number;
  bigRoom: { publishers: number; videoPublishers: number; subscribers: number };
  smallRooms: { rooms: number; publishersPerRoom: number; listenersPerRoom: number };
  sampleEvery: number;
  sfuPorts: [number, number];
  publisherPorts: [number, number];
  subscriberPorts: [number, number][];
}

interface ThreadSample {
  comm: string;
  cpuS: number;
}

/** CPU seconds of every thread of a process, by tid. */
export function sampleThreads(pid: number): Map<number, ThreadSample> {
  const out = new Map<number, ThreadSample>();
  let tids: string[];
  try {
    tids = readdirSync(`/proc/${pid}/task`);
  } catch {
    return out;
  }
  for (const t of tids) {
    try {
      const stat = readFileSync(`/proc/${pid}/task/${t}/stat`, 'utf8');
      const open = stat.indexOf('(');
      const close = stat.lastIndexOf(')');
      const rest = stat.slice(close + 2).split(' ');
      out.set(Number(t), { comm: stat.slice(open + 1, close), cpuS: (Number(rest[11]) + Number(rest[12])) / CLK_TCK });
    } catch {
      // the thread ended between readdir and read
    }
  }
  return out;
}

/** Thread role: the main thread, a media worker (`media-<i>`), or everything else. */
const roleOf = (pid: number, tid: number, comm: string): string => (tid === pid ? 'main' : /^media-\d+$/.test(comm) ? comm : 'other');

interface Target {
  label: string;
  workers: number;
  sfu: SfuProcess;
  group: string;
  publisherPorts: [number, number];
  videoPublisherPorts: [number, number];
  subscriberPorts: [number, number][];
}

interface Window {
  /** Round number (0-based), for pairing the counts' windows of one round. */
  round: number;
  /**
   * Whether the window carried the full offered load: the SFU received ≥ 95 % of what the
   * publishers should send and forwarded ≥ 95 % of what the listeners should get. On a shared
   * machine the load processes are sometimes starved (their timers send at most ten late frames),
   * and a short window's fixed costs are spread over fewer packets.
   */
  full: boolean;
  seconds: number;
  /** Percent of one core, per role (main, media-0, …, other) and in total. */
  threads: Record<string, number>;
  totalCpuPercent: number;
  /** Per worker, from its own process.threadCpuUsage() (the pool's gauge). */
  gaugeCpuPercent: Record<string, number>;
  otherByName: Record<string, number>;
  forwardedPps: number;
  incomingPps: number;
  receivedPps: number;
  workerPacketsOutPps: Record<string, number>;
  relay: { writtenPps: number; readPps: number; drops: number };
  loadCpuPercent: number;
  machineCpuPercent: number;
  corrupt: number;
  checked: number;
}

interface CheapStats {
  atMs: number;
  inPackets: number;
  sampled: number;
  corrupt: number;
  subscribers: number;
  outPackets: number;
}

const labelled = (snap: Map<string, number>, name: string): Record<string, number> => {
  const out: Record<string, number> = {};
  for (const [key, value] of snap) {
    if (!key.startsWith(`${name}{`)) continue;
    const w = /worker="(\d+)"/.exec(key)?.[1];
    if (w !== undefined) out[`media-${w}`] = value;
  }
  return out;
};

interface Load {
  publishers: ChildProcess[];
  subscribers: ChildProcess[];
}

async function measure(t: Target, load: Load, ms: number): Promise<Omit<Window, 'round' | 'full'>> {
  const loadPids = [...load.publishers, ...load.subscribers].map((c) => c.pid!);
  const snap = async () => {
    const [subs, metrics] = await Promise.all([
      Promise.all(load.subscribers.map((w) => ask<CheapStats>(w, { type: 'stats', group: t.group }, 30_000))),
      scrapeMetrics(t.sfu.url),
    ]);
    return {
      subs,
      metrics,
      threads: sampleThreads(t.sfu.pid),
      load: loadPids.reduce((sum, pid) => sum + (sampleProc(pid)?.cpuS ?? 0), 0),
      machine: machineJiffies(),
      at: performance.now(),
    };
  };
  const a = await snap();
  await sleep(ms);
  const b = await snap();
  const s = (b.at - a.at) / 1000;
  const threads: Record<string, number> = { main: 0, other: 0 };
  const otherByName: Record<string, number> = {};
  let total = 0;
  for (const [tid, tb] of b.threads) {
    const d = tb.cpuS - (a.threads.get(tid)?.cpuS ?? 0);
    const role = roleOf(t.sfu.pid, tid, tb.comm);
    threads[role] = (threads[role] ?? 0) + d;
    if (role === 'other') otherByName[tb.comm] = (otherByName[tb.comm] ?? 0) + d;
    total += d;
  }
  const pct = (x: number) => round((x / s) * 100, 2);
  const ga = labelled(a.metrics, 'matrixrtc_sfu_worker_cpu_seconds');
  const gb = labelled(b.metrics, 'matrixrtc_sfu_worker_cpu_seconds');
  const pa = labelled(a.metrics, 'matrixrtc_sfu_worker_packets_out');
  const pb = labelled(b.metrics, 'matrixrtc_sfu_worker_packets_out');
  const out = (m: Map<string, number>) => metricSum(m, 'livekit_packet_total', ['direction="outgoing"']);
  const inc = (m: Map<string, number>) => metricSum(m, 'livekit_packet_total', ['direction="incoming"']);
  const sumOf = (m: Map<string, number>, name: string) => metricSum(m, name);
  return {
    seconds: s,
    threads: Object.fromEntries(Object.entries(threads).map(([k, v]) => [k, pct(v)])),
    totalCpuPercent: pct(total),
    gaugeCpuPercent: Object.fromEntries(Object.keys(gb).map((k) => [k, pct(gb[k]! - (ga[k] ?? 0))])),
    otherByName: Object.fromEntries(Object.entries(otherByName).filter(([, v]) => v > 0).map(([k, v]) => [k, pct(v)])),
    forwardedPps: (out(b.metrics) - out(a.metrics)) / s,
    incomingPps: (inc(b.metrics) - inc(a.metrics)) / s,
    receivedPps: b.subs.reduce((sum, bw, i) => sum + (bw.inPackets - a.subs[i]!.inPackets) / Math.max(0.001, (bw.atMs - a.subs[i]!.atMs) / 1000), 0),
    workerPacketsOutPps: Object.fromEntries(Object.keys(pb).map((k) => [k, round((pb[k]! - (pa[k] ?? 0)) / s)])),
    relay: {
      writtenPps: round((sumOf(b.metrics, 'matrixrtc_sfu_worker_relay_written') - sumOf(a.metrics, 'matrixrtc_sfu_worker_relay_written')) / s),
      readPps: round((sumOf(b.metrics, 'matrixrtc_sfu_worker_relay_read') - sumOf(a.metrics, 'matrixrtc_sfu_worker_relay_read')) / s),
      drops: sumOf(b.metrics, 'matrixrtc_sfu_worker_relay_drops') - sumOf(a.metrics, 'matrixrtc_sfu_worker_relay_drops'),
    },
    loadCpuPercent: pct(b.load - a.load),
    machineCpuPercent: round(((b.machine.busy - a.machine.busy) / Math.max(1, b.machine.total - a.machine.total)) * cpus().length * 100, 1),
    corrupt: b.subs.reduce((n, x) => n + x.corrupt, 0) - a.subs.reduce((n, x) => n + x.corrupt, 0),
    checked: b.subs.reduce((n, x) => n + x.sampled, 0) - a.subs.reduce((n, x) => n + x.sampled, 0),
  };
}

export interface WorkersConfigResult {
  workers: number;
  placement: 'pack' | 'spread';
  connectedSubscribers: number;
  /** Windows measured, and those the medians use (the full ones, unless fewer than half the rounds were). */
  windowsMeasured: number;
  windowsUsed: number;
  usedShortWindows: boolean;
  /** Medians over the windows used. */
  forwardedPps: number;
  expectedForwardedPps: number;
  deliveryRatio: number;
  incomingPps: number;
  /** Percent of one core per thread role (main, media-<i>, other), medians over the rounds. */
  threadCpuPercent: Record<string, number>;
  /** Each thread role's share of the process's CPU, percent. */
  threadShareOfProcess: Record<string, number>;
  /** The media workers' own process.threadCpuUsage() (the pool's gauge), percent of one core. */
  workerGaugeCpuPercent: Record<string, number>;
  /** `other` by thread name (V8 platform threads, libuv pool, …), percent of one core. */
  otherByThreadName: Record<string, number>;
  totalCpuPercent: number;
  /** The busiest thread that carries media or signalling (main or a media worker; not `other`). */
  maxThread: { role: string; cpuPercent: number };
  usPerForwardedPacket: number;
  workerPacketsOutPps: Record<string, number>;
  relay: { writtenPps: number; readPps: number; drops: number };
  loadCpuPercent: number;
  machineCpuPercent: number;
  sampledCorrupt: number;
  sampledChecked: number;
  /** Per round, for the spread. */
  perRound: { round: number; full: boolean; usPerForwardedPacket: number; maxThreadCpuPercent: number; totalCpuPercent: number; forwardedPps: number }[];
}

/** The busiest thread carrying media or signalling in a window (main or a media worker, not `other`). */
const carrying = (w: Window): [string, number] =>
  Object.entries(w.threads)
    .filter(([r]) => r !== 'other')
    .toSorted((x, y) => y[1] - x[1])[0] ?? ['main', 0];
/** µs of the whole process's CPU per forwarded packet in a window. */
const usPer = (w: Window): number => (w.forwardedPps > 0 ? (w.totalCpuPercent / 100 / w.forwardedPps) * 1e6 : NaN);

function summarise(workers: number, placement: 'pack' | 'spread', connected: number, expected: number, all: Window[], rounds: number): WorkersConfigResult {
  const fullOnes = all.filter((w) => w.full);
  const usedShortWindows = fullOnes.length < Math.ceil(rounds / 2);
  const ws = usedShortWindows ? all : fullOnes;
  const pick = (f: (w: Window) => number) => round(median(ws.map(f)), 2);
  const roles = [...new Set(ws.flatMap((w) => Object.keys(w.threads)))].toSorted();
  const threadCpuPercent = Object.fromEntries(roles.map((r) => [r, pick((w) => w.threads[r] ?? 0)]));
  const totalCpuPercent = pick((w) => w.totalCpuPercent);
  const maxCpu = pick((w) => carrying(w)[1]);
  const maxRole = Object.entries(threadCpuPercent)
    .filter(([r]) => r !== 'other')
    .toSorted((x, y) => y[1] - x[1])[0]?.[0] ?? 'main';
  const forwardedPps = pick((w) => w.forwardedPps);
  const gaugeKeys = [...new Set(ws.flatMap((w) => Object.keys(w.gaugeCpuPercent)))].toSorted();
  const otherKeys = [...new Set(ws.flatMap((w) => Object.keys(w.otherByName)))].toSorted();
  const outKeys = [...new Set(ws.flatMap((w) => Object.keys(w.workerPacketsOutPps)))].toSorted();
  return {
    workers,
    placement,
    connectedSubscribers: connected,
    windowsMeasured: all.length,
    windowsUsed: ws.length,
    usedShortWindows,
    forwardedPps,
    expectedForwardedPps: expected,
    deliveryRatio: round(pick((w) => w.receivedPps) / expected, 3),
    incomingPps: pick((w) => w.incomingPps),
    threadCpuPercent,
    threadShareOfProcess: Object.fromEntries(roles.map((r) => [r, pick((w) => ((w.threads[r] ?? 0) / Math.max(0.001, w.totalCpuPercent)) * 100)])),
    workerGaugeCpuPercent: Object.fromEntries(gaugeKeys.map((k) => [k, pick((w) => w.gaugeCpuPercent[k] ?? 0)])),
    otherByThreadName: Object.fromEntries(otherKeys.map((k) => [k, pick((w) => w.otherByName[k] ?? 0)])),
    totalCpuPercent,
    maxThread: { role: maxRole, cpuPercent: maxCpu },
    usPerForwardedPacket: pick(usPer),
    workerPacketsOutPps: Object.fromEntries(outKeys.map((k) => [k, pick((w) => w.workerPacketsOutPps[k] ?? 0)])),
    relay: { writtenPps: pick((w) => w.relay.writtenPps), readPps: pick((w) => w.relay.readPps), drops: ws.reduce((n, w) => n + w.relay.drops, 0) },
    loadCpuPercent: pick((w) => w.loadCpuPercent),
    machineCpuPercent: pick((w) => w.machineCpuPercent),
    sampledCorrupt: ws.reduce((n, w) => n + w.corrupt, 0),
    sampledChecked: ws.reduce((n, w) => n + w.checked, 0),
    perRound: all.map((w) => ({
      round: w.round,
      full: w.full,
      usPerForwardedPacket: round(usPer(w), 2),
      maxThreadCpuPercent: round(carrying(w)[1], 2),
      totalCpuPercent: w.totalCpuPercent,
      forwardedPps: round(w.forwardedPps),
    })),
  };
}

/** Median over the rounds where both were full of the per-round ratio c ÷ one. */
function paired(c: WorkersConfigResult, one: WorkersConfigResult): { maxThreadOverSingleThread: number; usPerPacketRatio: number; rounds: number } {
  const pairs = c.perRound.flatMap((x) => {
    const y = one.perRound.find((o) => o.round === x.round);
    return x.full && y?.full ? [{ x, y }] : [];
  });
  return {
    maxThreadOverSingleThread: round(median(pairs.map(({ x, y }) => x.maxThreadCpuPercent / y.maxThreadCpuPercent)), 3),
    usPerPacketRatio: round(median(pairs.map(({ x, y }) => x.usPerForwardedPacket / y.usPerForwardedPacket)), 3),
    rounds: pairs.length,
  };
}

/** Runs `fn` over `items`, at most `n` at a time. */
async function inParallel<T>(items: T[], n: number, fn: (item: T) => Promise<void>): Promise<void> {
  let next = 0;
  await Promise.all(
    Array.from({ length: Math.min(n, items.length) }, async () => {
      while (next < items.length) await fn(items[next++]!);
    }),
  );
}

const slice = (r: [number, number], k: number, n: number): [number, number] => {
  const size = Math.floor((r[1] - r[0] + 1) / n);
  return [r[0] + k * size, r[0] + (k + 1) * size - 1];
};

export interface ScenarioResult {
  scenario: 'bigRoom' | 'smallRooms';
  description: string;
  placement: 'pack' | 'spread';
  configs: WorkersConfigResult[];
  /** N workers ÷ 1 worker, per N ≠ 1 (null when 1 is not in the list). */
  ratios: {
    workers: number;
    maxThreadOverSingleThread: number;
    maxThreadGoal: number;
    usPerPacketRatio: number;
    usPerPacketGoal: number;
    /** The same two ratios per round (round r of N against round r of 1), medians. */
    pairedMedian: { maxThreadOverSingleThread: number; usPerPacketRatio: number; rounds: number };
  }[];
  joinSeconds: number;
}

/** One scenario: an SFU per worker count, the same rooms on each, alternating rounds. */
async function scenario(
  procs: ProcessSet,
  name: 'bigRoom' | 'smallRooms',
  opts: WorkersBenchOptions,
  log: (line: string) => void,
): Promise<ScenarioResult> {
  const placement = name === 'bigRoom' ? 'spread' : 'pack';
  const n = opts.counts.length;
  const rooms =
    name === 'bigRoom'
      ? [{ room: 'big', publishers: opts.bigRoom.publishers, videoPublishers: opts.bigRoom.videoPublishers, listeners: opts.bigRoom.subscribers }]
      : Array.from({ length: opts.smallRooms.rooms }, (_, i) => ({
          room: `small-${i}`,
          publishers: opts.smallRooms.publishersPerRoom,
          videoPublishers: 0,
          listeners: opts.smallRooms.listenersPerRoom,
        }));
  const expected = rooms.reduce((sum, r) => sum + (r.publishers * PPS.audio + r.videoPublishers * PPS.video) * r.listeners, 0);
  const description =
    name === 'bigRoom'
      ? `one room: ${opts.bigRoom.publishers} audio publishers, ${opts.bigRoom.videoPublishers} video publishers, ${opts.bigRoom.subscribers} subscribers; placement spread`
      : `${opts.smallRooms.rooms} rooms of ${opts.smallRooms.publishersPerRoom} audio publishers + ${opts.smallRooms.listenersPerRoom} listeners; placement pack`;
  log(`[workers ${name}] ${description}; expected ${expected} forwarded pps per SFU`);
  const targets: Target[] = [];
  const publisher = forkWorker(procs, '_sfu-cheap-worker.ts');
  const videoPublisher = rooms.some((r) => r.videoPublishers > 0) ? forkWorker(procs, '_sfu-cheap-worker.ts') : undefined;
  const subscribers = opts.subscriberPorts.map(() => forkWorker(procs, '_sfu-cheap-worker.ts'));
  const publishers = videoPublisher ? [publisher, videoPublisher] : [publisher];
  const load: Load = { publishers, subscribers };
  try {
    for (const [k, workers] of opts.counts.entries()) {
      const sfu = await startSfuProcess(procs, {
        portRange: slice(opts.sfuPorts, k, n),
        args: ['--workers', String(workers)],
        config: [`worker_placement: ${placement}`],
      });
      targets.push({
        label: `workers=${workers}`,
        workers,
        sfu,
        group: `${name}-w${workers}`,
        // Audio and video publishers (two processes) on halves of the target's slice.
        publisherPorts: slice(slice(opts.publisherPorts, k, n), 0, 2),
        videoPublisherPorts: slice(slice(opts.publisherPorts, k, n), 1, 2),
        subscriberPorts: opts.subscriberPorts.map((r) => slice(r, k, n)),
      });
    }
    const joinStart = performance.now();
    for (const t of targets) {
      const prefix = t.group;
      /** `count` publishers of `kind` in `room`, from one publisher process. */
      const publish = (proc: ChildProcess, room: string, kind: 'audio' | 'video', count: number, portRange: [number, number]) =>
        ask(
          proc,
          {
            type: 'publish',
            group: t.group,
            wsUrl: t.sfu.wsUrl,
            room: `${prefix}-${room}`,
            identities: Array.from({ length: count }, (_, i) => `${prefix}-${room}-${kind === 'audio' ? 'pub' : 'cam'}-${i}`),
            portRange,
            kind,
          },
          120_000,
        );
      await inParallel(rooms, 4, async (r) => {
        await publish(publisher, r.room, 'audio', r.publishers, t.publisherPorts);
        if (videoPublisher && r.videoPublishers > 0) await publish(videoPublisher, r.room, 'video', r.videoPublishers, t.videoPublisherPorts);
      });
      // Listeners round-robin over the subscriber processes; a room's are joined together.
      const jobs: { worker: number; room: string; identities: string[] }[] = [];
      let next = 0;
      for (const r of rooms) {
        const per: string[][] = subscribers.map(() => []);
        for (let i = 0; i < r.listeners; i++) per[next++ % subscribers.length]!.push(`${prefix}-${r.room}-sub-${i}`);
        per.forEach((identities, worker) => identities.length && jobs.push({ worker, room: `${prefix}-${r.room}`, identities }));
      }
      await Promise.all(
        subscribers.map((w, wi) =>
          inParallel(
            jobs.filter((j) => j.worker === wi),
            name === 'bigRoom' ? 1 : 3,
            async (j) => {
              const res = await ask<{ failures: string[] }>(
                w,
                {
                  type: 'join',
                  group: t.group,
                  wsUrl: t.sfu.wsUrl,
                  room: j.room,
                  identities: j.identities,
                  portRange: t.subscriberPorts[wi],
                  sampleEvery: opts.sampleEvery,
                  concurrency: 4,
                },
                600_000,
              );
              for (const f of res.failures.slice(0, 3)) log(`[workers ${name} ${t.label}] join failed: ${f}`);
            },
          ),
        ),
      );
      log(`[workers ${name} ${t.label}] joined after ${round((performance.now() - joinStart) / 1000)} s`);
    }
    const joinSeconds = round((performance.now() - joinStart) / 1000);
    const nominalIn = rooms.reduce((sum, r) => sum + r.publishers * PPS.audio + r.videoPublishers * PPS.video, 0);
    const listenersPlanned = rooms.reduce((sum, r) => sum + r.listeners, 0);
    const plan = new Map<Target, { connected: number; expected: number; windows: Window[]; toldShort?: boolean }>();
    for (const t of targets) {
      const stats = await Promise.all(subscribers.map((w) => ask<CheapStats>(w, { type: 'stats', group: t.group }, 30_000)));
      const connected = stats.reduce((sum, x) => sum + x.subscribers, 0);
      // What the connected listeners should get (failed joins are left out).
      plan.set(t, { connected, expected: Math.round(expected * (connected / Math.max(1, listenersPlanned))), windows: [] });
    }
    const fullCount = (t: Target) => plan.get(t)!.windows.filter((w) => w.full).length;
    // Rounds until every count has `rounds` full windows, at most twice as many rounds.
    for (let r = 0; r < 2 * opts.rounds && targets.some((t) => fullCount(t) < opts.rounds); r++) {
      const order = r % 2 === 0 ? targets : targets.toReversed();
      for (const t of order) {
        const p = plan.get(t)!;
        await Promise.all(publishers.map((x) => ask(x, { type: 'resume', group: t.group })));
        await sleep(opts.warmupMs);
        const m = await measure(t, load, opts.windowMs);
        await Promise.all(publishers.map((x) => ask(x, { type: 'pause', group: t.group })));
        const w: Window = { ...m, round: r, full: m.incomingPps >= 0.95 * nominalIn && m.forwardedPps >= 0.95 * p.expected };
        p.windows.push(w);
        const threads = Object.entries(w.threads)
          .map(([k, v]) => `${k} ${v}`)
          .join(', ');
        log(
          `[workers ${name} ${t.label}] round ${r + 1}: in ${round(w.incomingPps)}/${nominalIn} pps, forwarded ${round(w.forwardedPps)}/${p.expected} pps (received ${round(w.receivedPps)})${w.full ? '' : ' SHORT (not used)'}, ` +
            `SFU ${w.totalCpuPercent} % (${threads}), ${round(usPer(w), 2)} µs/fwd pkt, ` +
            `relay w/r ${w.relay.writtenPps}/${w.relay.readPps} pps, load ${w.loadCpuPercent} %, machine ${w.machineCpuPercent} %`,
        );
        if (!w.full && !p.toldShort) {
          // Publishers starved or gone: what the SFU said about it (BENCH_SFU_LOG_LEVEL=info says more).
          p.toldShort = true;
          log(`[workers ${name} ${t.label}] short window; the SFU's last output:\n${t.sfu.tail().slice(-1500)}`);
        }
        // Let the paused SFU's queues drain before the next one is measured.
        await sleep(500);
      }
    }
    const configs = targets.map((t) => {
      const p = plan.get(t)!;
      return summarise(t.workers, placement, p.connected, p.expected, p.windows, opts.rounds);
    });
    const one = configs.find((c) => c.workers === 1);
    const ratios = one
      ? configs
          .filter((c) => c.workers !== 1)
          .map((c) => ({
            workers: c.workers,
            maxThreadOverSingleThread: round(c.maxThread.cpuPercent / one.maxThread.cpuPercent, 3),
            maxThreadGoal: 0.6,
            usPerPacketRatio: round(c.usPerForwardedPacket / one.usPerForwardedPacket, 3),
            usPerPacketGoal: 1.15,
            pairedMedian: paired(c, one),
          }))
      : [];
    return { scenario: name, description, placement, configs, ratios, joinSeconds };
  } finally {
    await Promise.all([...publishers, ...subscribers].map((w) => ask(w, { type: 'close' }, 20_000).catch(() => undefined)));
    await Promise.all([...publishers, ...subscribers].map((w) => stopChild(w, 3000)));
    for (const t of targets) await stopChild(t.sfu.child, 15_000);
  }
}

export function formatScenario(s: ScenarioResult): string {
  const lines = [`${s.scenario}: ${s.description}`];
  for (const c of s.configs) {
    const threads = Object.entries(c.threadCpuPercent)
      .map(([k, v]) => `${k} ${v} % (${c.threadShareOfProcess[k]} % of the process)`)
      .join(', ');
    const gauge = Object.entries(c.workerGaugeCpuPercent)
      .map(([k, v]) => `${k} ${v} %`)
      .join(', ');
    lines.push(
      `  workers=${c.workers} (${c.windowsUsed} of ${c.windowsMeasured} windows${c.usedShortWindows ? ', SHORT ones included: too few full ones' : ''}): forwarded ${c.forwardedPps}/${c.expectedForwardedPps} pps (delivery ${c.deliveryRatio}), SFU total ${c.totalCpuPercent} % of a core, ` +
        `${c.usPerForwardedPacket} µs/fwd pkt; threads: ${threads}${gauge ? `; worker gauge: ${gauge}` : ''}; relay written/read ${c.relay.writtenPps}/${c.relay.readPps} pps, drops ${c.relay.drops}; ` +
        `load ${c.loadCpuPercent} %, machine ${c.machineCpuPercent} %`,
    );
  }
  for (const r of s.ratios) {
    lines.push(
      `  workers=${r.workers} ÷ workers=1: max thread CPU ${r.maxThreadOverSingleThread} (goal ≤ ${r.maxThreadGoal}: ${r.maxThreadOverSingleThread <= r.maxThreadGoal ? 'met' : 'NOT met'}), ` +
        `CPU per packet ${r.usPerPacketRatio} (goal ≤ ${r.usPerPacketGoal}: ${r.usPerPacketRatio <= r.usPerPacketGoal ? 'met' : 'NOT met'}); ` +
        `paired per round (${r.pairedMedian.rounds} rounds): ${r.pairedMedian.maxThreadOverSingleThread}, ${r.pairedMedian.usPerPacketRatio}`,
    );
  }
  return lines.join('\n');
}

export async function runWorkersBench(procs: ProcessSet, opts: WorkersBenchOptions, log: (line: string) => void): Promise<object> {
  const t0 = performance.now();
  const loadAtStart = loadavg().map((x) => round(x, 2));
  const big = await scenario(procs, 'bigRoom', opts, log);
  log(formatScenario(big));
  const small = await scenario(procs, 'smallRooms', opts, log);
  log(formatScenario(small));
  log(`\n${formatScenario(big)}\n${formatScenario(small)}`);
  return {
    method: {
      cpu: '/proc/<sfu pid>/task/<tid>/stat utime+stime per window; main = tid equal to the pid, media-<i> = worker threads by OS thread name (Node sets it from the Worker name), other = the rest (V8 platform, libuv pool, inspector)',
      packets: 'livekit_packet_total{direction="outgoing"} of the SFU per window; µs per packet = the whole process CPU ÷ forwarded packets',
      rounds: `each round measures every worker count once (order flipping every round), ${opts.warmupMs} ms warm-up then a ${opts.windowMs} ms window, only the measured SFU receiving packets; rounds go on until every count has ${opts.rounds} full windows (≥ 95 % of the offered input and of the expected forwarded packets), at most ${2 * opts.rounds} rounds; medians use the full windows`,
      ratios: 'medians over the rounds, N workers ÷ 1 worker; pairedMedian = median over rounds of the per-round ratio',
      load: 'bench/_sfu-cheap-worker.ts: werift clients that count SRTP instead of decrypting it (1 in sampleEvery verified), publishers replaying Opus-sized frames at 50 packets/s or single-layer VP8 (900-1100 byte packets) at 75 packets/s',
    },
    options: opts,
    scenarios: { bigRoom: big, smallRooms: small },
    machineLoad: { atStart: loadAtStart, atEnd: loadavg().map((x) => round(x, 2)) },
    benchmarkSeconds: round((performance.now() - t0) / 1000),
  };
}
