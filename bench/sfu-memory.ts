/**
 * `npm run bench -- sfu-memory`: where the SFU's memory per connected participant goes. The SFU
 * runs as its own process, as `npm run bench -- sfu` starts it (bench/_sfu-procs.ts), with the
 * saturation sweep's load (bench/_sfu-cheap-worker.ts): paced audio publishers and cheap werift
 * subscribers, each subscribing to every publisher. Subscribers are added in steps; two passes,
 * each on a fresh SFU:
 * 1. figures only: at each step, after a settle, the SFU's RSS (/proc) and V8's own figures
 *    from its /metrics (heap used and total, per heap space, external memory);
 * 2. heap snapshots: at each step the SFU writes one (--heapsnapshot-signal), read here
 *    (bench/_heap-snapshot.ts) into per-class counts, self and retained bytes. A snapshot makes
 *    the SFU allocate, so this pass's RSS is not the one reported.
 * Per figure and per class the least-squares slope against participants (publishers +
 * subscribers) is "bytes per participant"; RSS slope against heap-used slope says how much of
 * the RSS growth is live objects and how much V8's heap sizing or the allocator. Prints the top
 * classes and writes bench/results/sfu-memory.json (through bench/run.ts). Knobs:
 * BENCH_MEM_PUBLISHERS (default 10), BENCH_MEM_STEPS (subscriber counts, default "10,40,70"),
 * BENCH_MEM_SETTLE_MS (default 4000), BENCH_MEM_SNAPSHOTS=0 (pass 1 only), BENCH_MEM_FIGURES=0 (pass 2 only), BENCH_MEM_DETAIL
 * (classes whose instances' holdings are broken down, from the last snapshot), BENCH_MEM_KEEP
 * (a directory: each step's snapshot is kept there, for DevTools or a diff), BENCH_MEM_SFU_ARGS (node flags for the
 * SFU, e.g. "--max-semi-space-size=8" to see what V8's young generation costs).
 */
import type { ChildProcess } from 'node:child_process';
import { mkdtempSync, readdirSync, renameSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ProcessSet, ask, forkWorker, metricSum, round, sampleProc, scrapeMetrics, sleep, startSfuProcess, stopChild, type SfuProcess } from './_sfu-procs.ts';
import { linearFit } from './_sfu-measure.ts';
import { readHeapSnapshot, summarise, type ClassSummary, type DetailRow } from './_heap-snapshot.ts';
import { waitFor } from '../test/support/wait.ts';

const env = process.env;
const PUBLISHERS = Number(env.BENCH_MEM_PUBLISHERS ?? 10);
const STEPS = (env.BENCH_MEM_STEPS ?? '10,40,70').split(',').map(Number).filter((n) => n > 0);
const SETTLE_MS = Number(env.BENCH_MEM_SETTLE_MS ?? 4000);
const SNAPSHOTS = env.BENCH_MEM_SNAPSHOTS !== '0';
const FIGURES = env.BENCH_MEM_FIGURES !== '0';
const DETAIL = (env.BENCH_MEM_DETAIL ?? 'RTCRtpSender,RTCRtpReceiver,RTCRtpTransceiver,RTCPeerConnection,WeriftTransport').split(',').filter(Boolean);
const KEEP = env.BENCH_MEM_KEEP;
const SFU_ARGS = (env.BENCH_MEM_SFU_ARGS ?? '').split(' ').filter(Boolean);
const TOP = 30;

// Port ranges of their own (not the tests' 40000-49999 nor `bench sfu`'s 30000-39999).
const SFU_PORTS: [number, number] = [20000, 22999];
const PUBLISHER_PORTS: [number, number] = [23000, 23999];
const SUBSCRIBER_PORTS: [number, number][] = [
  [24000, 24999],
  [25000, 25999],
];

const log = (line: string) => console.log(`[sfu-memory] ${line}`);
const MB = 2 ** 20;

interface Figures {
  subscribers: number;
  participants: number;
  rssBytes: number;
  heapUsedBytes: number;
  heapTotalBytes: number;
  externalBytes: number;
  heapSpacesUsed: Record<string, number>;
  /** What V8 has reserved per space (the young generation grows with the allocation rate). */
  heapSpacesSize: Record<string, number>;
  /** SFU CPU over the settle window, percent of one core (what a smaller heap costs in GC). */
  sfuCpuPercent: number;
}

interface Load {
  sfu: SfuProcess;
  publisher: ChildProcess;
  subscribers: ChildProcess[];
  joined: number;
  connected: number;
}

async function startLoad(procs: ProcessSet, execArgv: string[]): Promise<Load> {
  const sfu = await startSfuProcess(procs, { portRange: SFU_PORTS, execArgv: [...SFU_ARGS, ...execArgv] });
  const publisher = forkWorker(procs, '_sfu-cheap-worker.ts');
  const subscribers = SUBSCRIBER_PORTS.map(() => forkWorker(procs, '_sfu-cheap-worker.ts'));
  const identities = Array.from({ length: PUBLISHERS }, (_, i) => `mem-pub-${i}`);
  await ask(publisher, { type: 'publish', group: 'mem', wsUrl: sfu.wsUrl, room: 'mem', identities, portRange: PUBLISHER_PORTS }, 120_000);
  await ask(publisher, { type: 'resume', group: 'mem' });
  return { sfu, publisher, subscribers, joined: 0, connected: 0 };
}

async function stopLoad(load: Load): Promise<void> {
  const workers = [load.publisher, ...load.subscribers];
  await Promise.all(workers.map((w) => ask(w, { type: 'close' }, 15_000).catch(() => undefined)));
  await Promise.all(workers.map((w) => stopChild(w, 3000)));
  await stopChild(load.sfu.child, 10_000);
}

/** Tops the subscribers up to `target` (shared out over the workers). */
async function joinUpTo(load: Load, target: number): Promise<void> {
  const perWorker: string[][] = load.subscribers.map(() => []);
  for (let i = load.joined; i < target; i++) perWorker[i % perWorker.length]!.push(`mem-sub-${i}`);
  const replies = await Promise.all(
    load.subscribers.map((w, i) =>
      ask<{ subscribers: number; failures: string[] }>(
        w,
        { type: 'join', group: 'mem', wsUrl: load.sfu.wsUrl, room: 'mem', identities: perWorker[i], portRange: SUBSCRIBER_PORTS[i], sampleEvery: 64, concurrency: 4 },
        300_000,
      ),
    ),
  );
  for (const f of replies.flatMap((r) => r.failures).slice(0, 3)) log(`subscriber join failed: ${f}`);
  load.joined = target;
  load.connected = replies.reduce((n, r) => n + r.subscribers, 0);
}

async function figures(load: Load, cpuPercent = NaN): Promise<Figures> {
  const m = await scrapeMetrics(load.sfu.url);
  const spaces: Record<string, number> = {};
  const sizes: Record<string, number> = {};
  for (const [key, value] of m) {
    const space = /^nodejs_heap_space_size_used_bytes\{space="([^"]+)"/.exec(key)?.[1];
    if (space) spaces[space] = value;
    const sized = /^nodejs_heap_space_size_total_bytes\{space="([^"]+)"/.exec(key)?.[1];
    if (sized) sizes[sized] = value;
  }
  return {
    subscribers: load.connected,
    participants: PUBLISHERS + load.connected,
    rssBytes: sampleProc(load.sfu.pid)?.rssBytes ?? 0,
    heapUsedBytes: metricSum(m, 'nodejs_heap_size_used_bytes'),
    heapTotalBytes: metricSum(m, 'nodejs_heap_size_total_bytes'),
    externalBytes: metricSum(m, 'nodejs_external_memory_bytes'),
    heapSpacesUsed: spaces,
    heapSpacesSize: sizes,
    sfuCpuPercent: round(cpuPercent),
  };
}

/** Has the SFU write a heap snapshot into `dir` and waits until it is complete. */
async function snapshot(load: Load, dir: string): Promise<string> {
  const before = new Set(readdirSync(dir));
  load.sfu.child.kill('SIGUSR2');
  let file = '';
  await waitFor(
    'the SFU to start its heap snapshot',
    () => {
      file = readdirSync(dir).find((f) => f.endsWith('.heapsnapshot') && !before.has(f)) ?? '';
      return file !== '';
    },
    { timeoutMs: 60_000, intervalMs: 200 },
  );
  // The snapshot is written on the SFU's main thread: once it answers again, the file is whole.
  await waitFor('the SFU to finish its heap snapshot', async () => (await fetch(`${load.sfu.url}/healthz`).catch(() => undefined))?.ok === true, {
    timeoutMs: 120_000,
    intervalMs: 200,
  });
  return join(dir, file);
}

const slope = (points: { x: number; y: number }[]) => linearFit(points).slope;

function perParticipantFigures(rows: Figures[]) {
  const fit = (f: (r: Figures) => number) => round(slope(rows.map((r) => ({ x: r.participants, y: f(r) }))) / 1024, 1);
  const spaces = Object.keys(rows[0]?.heapSpacesUsed ?? {});
  return {
    rssKiB: fit((r) => r.rssBytes),
    heapUsedKiB: fit((r) => r.heapUsedBytes),
    heapTotalKiB: fit((r) => r.heapTotalBytes),
    externalKiB: fit((r) => r.externalBytes),
    heapSpacesUsedKiB: Object.fromEntries(spaces.map((s) => [s, fit((r) => r.heapSpacesUsed[s] ?? 0)])),
    heapSpacesSizeKiB: Object.fromEntries(spaces.map((s) => [s, fit((r) => r.heapSpacesSize[s] ?? 0)])),
  };
}

interface ClassSlope {
  name: string;
  /** Instances, self bytes and retained bytes per participant (slopes). */
  count: number;
  selfBytes: number;
  retainedBytes: number;
}

function classSlopes(points: { participants: number; classes: Map<string, ClassSummary> }[]): ClassSlope[] {
  const names = new Set(points.flatMap((p) => [...p.classes.keys()]));
  const out: ClassSlope[] = [];
  for (const name of names) {
    const of = (f: (c: ClassSummary) => number) => slope(points.map((p) => ({ x: p.participants, y: f(p.classes.get(name) ?? { name, count: 0, selfBytes: 0, retainedBytes: 0 }) })));
    out.push({ name, count: round(of((c) => c.count), 2), selfBytes: Math.round(of((c) => c.selfBytes)), retainedBytes: Math.round(of((c) => c.retainedBytes)) });
  }
  return out;
}

/** Detail rows as bytes (and holdings) per instance of the class. */
function perInstance(rows: DetailRow[]): { instances: number; perInstance: { key: string; bytes: number; count: number }[] } {
  const instances = rows.find((r) => r.key === '(self)')?.count ?? 0;
  return {
    instances,
    perInstance: rows.slice(0, 15).map((r) => ({ key: r.key, bytes: Math.round(r.retainedBytes / Math.max(1, instances)), count: round(r.count / Math.max(1, instances), 2) })),
  };
}

function table(title: string, rows: ClassSlope[]): string {
  const lines = rows.map((r) => `  ${String(r.retainedBytes).padStart(9)} ${String(r.selfBytes).padStart(9)} ${String(r.count).padStart(8)}  ${r.name}`);
  return [title, `  ${'retained'.padStart(9)} ${'self'.padStart(9)} ${'count'.padStart(8)}  class (bytes and instances per participant)`, ...lines].join('\n');
}

async function figuresPass(procs: ProcessSet): Promise<Figures[]> {
  const load = await startLoad(procs, []);
  const rows: Figures[] = [];
  try {
    for (const step of STEPS) {
      await joinUpTo(load, step);
      const a = sampleProc(load.sfu.pid);
      await sleep(SETTLE_MS);
      const b = sampleProc(load.sfu.pid);
      const f = await figures(load, a && b ? ((b.cpuS - a.cpuS) / ((b.atMs - a.atMs) / 1000)) * 100 : NaN);
      rows.push(f);
      log(
        `pass 1: ${f.participants} participants: RSS ${round(f.rssBytes / MB)} MB, heap used ${round(f.heapUsedBytes / MB)} MB of ${round(f.heapTotalBytes / MB)} MB ` +
          `(new space ${round((f.heapSpacesSize.new ?? 0) / MB)} MB, old ${round((f.heapSpacesSize.old ?? 0) / MB)} MB), external ${round(f.externalBytes / MB)} MB, SFU CPU ${f.sfuCpuPercent} %`,
      );
    }
  } finally {
    await stopLoad(load);
  }
  return rows;
}

async function snapshotPass(procs: ProcessSet) {
  const dir = mkdtempSync(join(tmpdir(), 'sfu-memory-'));
  const load = await startLoad(procs, ['--heapsnapshot-signal=SIGUSR2', `--diagnostic-dir=${dir}`]);
  const points: { participants: number; classes: Map<string, ClassSummary>; totalBytes: number; heapUsedAfterGcBytes: number }[] = [];
  let details: Record<string, { instances: number; perInstance: { key: string; bytes: number; count: number }[]; heldBy: DetailRow[] }> = {};
  try {
    for (const step of STEPS) {
      await joinUpTo(load, step);
      await sleep(SETTLE_MS);
      const file = await snapshot(load, dir);
      // Right after the snapshot's full GC: V8's heap used is the live heap.
      const after = await figures(load);
      const summary = summarise(readHeapSnapshot(file), DETAIL);
      const classes = summary.classes;
      details = Object.fromEntries(
        [...summary.details].map(([name, rows]) => [name, { ...perInstance(rows), heldBy: (summary.heldBy.get(name) ?? []).slice(0, 10) }]),
      );
      if (KEEP) renameSync(file, join(KEEP, `sfu-${PUBLISHERS + load.connected}-participants.heapsnapshot`));
      else rmSync(file);
      const totalBytes = [...classes.values()].reduce((n, c) => n + c.selfBytes, 0);
      points.push({ participants: PUBLISHERS + load.connected, classes, totalBytes, heapUsedAfterGcBytes: after.heapUsedBytes });
      log(`pass 2: ${PUBLISHERS + load.connected} participants: snapshot ${round(totalBytes / MB)} MB reachable, heap used after its GC ${round(after.heapUsedBytes / MB)} MB`);
    }
  } finally {
    await stopLoad(load);
    rmSync(dir, { recursive: true, force: true });
  }
  // The synthetic root retains everything: not a class anyone can shrink.
  const slopes = classSlopes(points).filter((c) => !c.name.startsWith('(synthetic)'));
  const fit = (f: (p: (typeof points)[number]) => number) => round(slope(points.map((p) => ({ x: p.participants, y: f(p) }))) / 1024, 1);
  return {
    steps: points.map((p) => ({ participants: p.participants, reachableBytes: p.totalBytes, heapUsedAfterGcBytes: p.heapUsedAfterGcBytes })),
    reachableKiBPerParticipant: fit((p) => p.totalBytes),
    heapUsedAfterGcKiBPerParticipant: fit((p) => p.heapUsedAfterGcBytes),
    detailsAtLastStep: details,
    byRetained: slopes.toSorted((a, b) => b.retainedBytes - a.retainedBytes).slice(0, TOP),
    bySelf: slopes.toSorted((a, b) => b.selfBytes - a.selfBytes).slice(0, TOP),
  };
}

export async function run(): Promise<object> {
  const procs = new ProcessSet();
  try {
    const rows = FIGURES ? await figuresPass(procs) : [];
    const perParticipant = perParticipantFigures(rows);
    log(`per participant (pass 1): RSS ${perParticipant.rssKiB} KiB, heap used ${perParticipant.heapUsedKiB} KiB, heap total ${perParticipant.heapTotalKiB} KiB, external ${perParticipant.externalKiB} KiB`);
    const snapshots = SNAPSHOTS ? await snapshotPass(procs) : null;
    if (snapshots) {
      log(`per participant (pass 2): reachable ${snapshots.reachableKiBPerParticipant} KiB, heap used after GC ${snapshots.heapUsedAfterGcKiBPerParticipant} KiB`);
      log(table('top classes by retained bytes per participant:', snapshots.byRetained));
      log(table('top classes by self bytes per participant:', snapshots.bySelf));
      for (const [name, d] of Object.entries(snapshots.detailsAtLastStep)) {
        log([`what one ${name} holds (mean of ${d.instances}, bytes):`, ...d.perInstance.map((r) => `  ${String(r.bytes).padStart(9)}  ${r.key}${r.count !== 1 ? ` (×${r.count})` : ''}`)].join('\n'));
        log([`who holds the ${name}s (bytes, instances):`, ...d.heldBy.map((r) => `  ${String(Math.round(r.retainedBytes)).padStart(9)} ${String(r.count).padStart(6)}  ${r.key}`)].join('\n'));
      }
    }
    return { publishers: PUBLISHERS, sfuArgs: SFU_ARGS, steps: rows, perParticipant, snapshots };
  } finally {
    await procs.killAll();
  }
}
