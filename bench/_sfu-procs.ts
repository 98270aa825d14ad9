/**
 * Process plumbing for the SFU benchmark: starts the SFU as its own child (`node sfu/main.ts`
 * with a generated LIVEKIT_CONFIG: loopback, a free port, bench keys, a private UDP port range),
 * forks client workers, reads CPU time and RSS of any pid from /proc (utime+stime deltas, never
 * `ps %cpu`, which is a lifetime average), and scrapes the SFU's /metrics. Every child made here
 * is registered in a `ProcessSet` whose `killAll()` the benchmark calls in `finally`.
 */
import { spawn, fork, type ChildProcess } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { AccessToken } from 'livekit-server-sdk';
import { freePort } from '../test/support/ports.ts';
import { waitFor } from '../test/support/wait.ts';
import { SFU_NODE_FLAGS } from '../sfu/node-flags.ts';

export const BENCH_API_KEY = 'benchkey';
export const BENCH_API_SECRET = 'bench-secret-0123456789abcdef-0123456789';
const here = dirname(fileURLToPath(import.meta.url));
export const repoRoot = join(here, '..');

/** Clock ticks per second for /proc/<pid>/stat (Linux on x86-64 and arm64: 100). */
const CLK_TCK = 100;

export interface ProcSample {
  /** utime + stime, seconds (all threads). */
  cpuS: number;
  rssBytes: number;
  atMs: number;
}

/** CPU seconds and RSS of a live process; undefined when it is gone. */
export function sampleProc(pid: number): ProcSample | undefined {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    // Field 2 (comm) may hold spaces; count from the closing parenthesis.
    const rest = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    const utime = Number(rest[11]);
    const stime = Number(rest[12]);
    const status = readFileSync(`/proc/${pid}/status`, 'utf8');
    const rssKb = Number(/VmRSS:\s+(\d+)/.exec(status)?.[1] ?? 0);
    return { cpuS: (utime + stime) / CLK_TCK, rssBytes: rssKb * 1024, atMs: performance.now() };
  } catch {
    return undefined;
  }
}

/** Children to kill at the end, whatever happened. */
export class ProcessSet {
  private readonly children = new Set<ChildProcess>();

  add<T extends ChildProcess>(child: T): T {
    this.children.add(child);
    child.once('exit', () => this.children.delete(child));
    return child;
  }

  /** SIGTERM, then SIGKILL after `graceMs` for whoever is still alive. */
  async killAll(graceMs = 5000): Promise<void> {
    const alive = [...this.children];
    await Promise.all(alive.map((c) => stopChild(c, graceMs)));
  }
}

/** Stops one child: SIGTERM, bounded wait, SIGKILL. Resolves when it has exited. */
export async function stopChild(child: ChildProcess, graceMs = 5000): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return;
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  child.kill('SIGTERM');
  let timer: NodeJS.Timeout | undefined;
  const timedOut = await Promise.race([
    exited.then(() => false),
    new Promise<boolean>((resolve) => {
      timer = setTimeout(() => resolve(true), graceMs);
    }),
  ]);
  clearTimeout(timer);
  if (timedOut) {
    child.kill('SIGKILL');
    await Promise.race([exited, new Promise((r) => setTimeout(r, 2000))]);
  }
}

export interface SfuProcess {
  child: ChildProcess;
  pid: number;
  url: string;
  wsUrl: string;
  /** Last lines the SFU wrote (diagnostics on failure). */
  tail(): string;
}

export async function startSfuProcess(
  procs: ProcessSet,
  opts: {
    cpuProfileDir?: string;
    cpuProfileName?: string;
    portRange: [number, number];
    root?: string;
    execArgv?: string[];
    /** Arguments of sfu/main.ts itself, e.g. `['--workers', '2']`. */
    args?: string[];
    /** Extra top-level YAML lines for the generated config, e.g. `worker_placement: spread`. */
    config?: string[];
  },
): Promise<SfuProcess> {
  const port = await freePort();
  // An older tree (`--against`) refuses keys it does not know: those sections are left out for
  // it (its sample config lists what it knows; without them it had neither shedding nor limits).
  const sample = (() => {
    try {
      return readFileSync(join(opts.root ?? repoRoot, 'config', 'sfu.yaml'), 'utf8');
    } catch {
      return '';
    }
  })();
  const knows = (section: string) => new RegExp(`^#? ?${section}:`, 'm').test(sample);
  const config = [
    `port: ${port}`,
    'bind_addresses: ["127.0.0.1"]',
    `keys: {${BENCH_API_KEY}: "${BENCH_API_SECRET}"}`,
    `rtc: {node_ip: "127.0.0.1", port_range_start: ${opts.portRange[0]}, port_range_end: ${opts.portRange[1]}}`,
    'room: {auto_create: true, empty_timeout: 60, departure_timeout: 5}',
    // The bench drives the SFU to saturation on purpose, all from loopback: no shedding.
    ...(knows('overload') ? ['overload: {cpu_load_limit: 0}'] : []),
    ...(knows('signal_limits') ? ['signal_limits: {max_connections_per_ip: 0}'] : []),
    // BENCH_SFU_LOG_LEVEL=info shows participants leaving and transports failing (`tail()`).
    `logging: {level: ${process.env.BENCH_SFU_LOG_LEVEL ?? 'warn'}}`,
    ...(opts.config ?? []),
    '',
  ].join('\n');
  // The flags the SFU runs with in production (sfu/node-flags.ts), then the caller's (later wins).
  const execArgv = [
    ...SFU_NODE_FLAGS,
    ...(opts.cpuProfileDir
      ? ['--cpu-prof', `--cpu-prof-dir=${opts.cpuProfileDir}`, ...(opts.cpuProfileName ? [`--cpu-prof-name=${opts.cpuProfileName}`] : [])]
      : []),
    ...(opts.execArgv ?? []),
  ];
  const env = Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith('LIVEKIT_')));
  const child = procs.add(
    spawn(process.execPath, [...execArgv, 'sfu/main.ts', ...(opts.args ?? [])], {
      cwd: opts.root ?? repoRoot,
      env: { ...env, LIVEKIT_CONFIG: config },
      stdio: ['ignore', 'pipe', 'pipe'],
    }),
  );
  let out = '';
  const keep = (b: Buffer) => {
    out = (out + b.toString('utf8')).slice(-8000);
  };
  child.stdout?.on('data', keep);
  child.stderr?.on('data', keep);
  const url = `http://127.0.0.1:${port}`;
  await waitFor(
    'the SFU process to answer /healthz',
    async () => {
      if (child.exitCode !== null) throw new Error(`SFU exited with ${child.exitCode}: ${out}`);
      const res = await fetch(`${url}/healthz`).catch(() => undefined);
      return res?.ok === true;
    },
    { timeoutMs: 20_000, intervalMs: 100 },
  );
  return { child, pid: child.pid!, url, wsUrl: url.replace(/^http/, 'ws'), tail: () => out };
}

/** Forks a bench worker module (IPC channel, JSON messages). */
export function forkWorker(procs: ProcessSet, module: string, env: Record<string, string> = {}): ChildProcess {
  return procs.add(
    fork(join(here, module), [], {
      cwd: repoRoot,
      env: { ...process.env, ...env },
      execArgv: [],
      stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
    }),
  );
}

/** Sends a request to a worker and waits (bounded) for the reply carrying the same id. */
let nextRequestId = 1;
export async function ask<T>(child: ChildProcess, msg: Record<string, unknown>, timeoutMs = 60_000): Promise<T> {
  const id = nextRequestId++;
  return await new Promise<T>((resolve, reject) => {
    const onMessage = (m: { id?: number; error?: string }) => {
      if (m.id !== id) return;
      cleanup();
      if (m.error) reject(new Error(`worker ${String(msg.type)}: ${m.error}`));
      else {
        const reply: Record<string, unknown> = { ...m };
        delete reply.id;
        resolve(reply as T);
      }
    };
    const onExit = (code: number | null) => {
      cleanup();
      reject(new Error(`worker exited (${code}) during ${String(msg.type)}`));
    };
    const timer = setTimeout(() => {
      cleanup();
      reject(new Error(`worker ${String(msg.type)} timed out after ${timeoutMs} ms`));
    }, timeoutMs);
    const cleanup = () => {
      clearTimeout(timer);
      child.off('message', onMessage);
      child.off('exit', onExit);
    };
    child.on('message', onMessage);
    child.once('exit', onExit);
    child.send({ ...msg, id });
  });
}

export async function mintToken(identity: string, room: string): Promise<string> {
  const at = new AccessToken(BENCH_API_KEY, BENCH_API_SECRET, { identity, ttl: '30m' });
  at.addGrant({ roomJoin: true, room, canPublish: true, canSubscribe: true });
  return await at.toJwt();
}

/** One Prometheus text exposition, as name{labels} → value. */
export type MetricSnapshot = Map<string, number>;

export async function scrapeMetrics(url: string): Promise<MetricSnapshot> {
  const snap: MetricSnapshot = new Map();
  const res = await fetch(`${url}/metrics`, { signal: AbortSignal.timeout(5000) }).catch(() => undefined);
  if (!res?.ok) return snap;
  for (const line of (await res.text()).split('\n')) {
    if (!line || line.startsWith('#')) continue;
    const space = line.lastIndexOf(' ');
    const value = Number(line.slice(space + 1));
    if (Number.isFinite(value)) snap.set(line.slice(0, space), value);
  }
  return snap;
}

/** Sum of every series of `name` whose label text contains all of `labels`. */
export function metricSum(snap: MetricSnapshot, name: string, labels: string[] = []): number {
  let sum = 0;
  for (const [key, value] of snap) {
    const brace = key.indexOf('{');
    const metric = brace < 0 ? key : key.slice(0, brace);
    if (metric !== name) continue;
    if (labels.every((l) => key.includes(l))) sum += value;
  }
  return sum;
}

/** Cumulative histogram buckets (le → count) of `name`, for the quantiles below. */
export function histogramBuckets(snap: MetricSnapshot, name: string): { le: number; count: number }[] {
  const out: { le: number; count: number }[] = [];
  for (const [key, value] of snap) {
    if (!key.startsWith(`${name}_bucket{`)) continue;
    const le = /le="([^"]+)"/.exec(key)?.[1];
    if (le === undefined) continue;
    out.push({ le: le === '+Inf' ? Infinity : Number(le), count: value });
  }
  return out.toSorted((a, b) => a.le - b.le);
}

/** Quantile from the difference of two cumulative bucket sets, linear within a bucket. */
export function histogramQuantile(
  before: { le: number; count: number }[],
  after: { le: number; count: number }[],
  q: number,
): number | undefined {
  const diff = after.map((b, i) => ({ le: b.le, count: b.count - (before[i]?.count ?? 0) }));
  const total = diff.at(-1)?.count ?? 0;
  if (total <= 0) return undefined;
  const rank = q * total;
  let prevLe = 0;
  let prevCount = 0;
  for (const b of diff) {
    if (b.count >= rank) {
      if (!Number.isFinite(b.le)) return prevLe;
      const inBucket = b.count - prevCount;
      return inBucket > 0 ? prevLe + ((rank - prevCount) / inBucket) * (b.le - prevLe) : b.le;
    }
    prevLe = b.le;
    prevCount = b.count;
  }
  return prevLe;
}

export const median = (xs: number[]): number => {
  if (!xs.length) return NaN;
  const s = xs.toSorted((a, b) => a - b);
  const m = Math.floor(s.length / 2);
  return s.length % 2 ? s[m]! : (s[m - 1]! + s[m]!) / 2;
};

export function percentile(xs: number[], p: number): number {
  if (!xs.length) return NaN;
  const s = xs.toSorted((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.floor((p / 100) * s.length))]!;
}

export const round = (x: number, digits = 1): number => {
  const f = 10 ** digits;
  return Math.round(x * f) / f;
};

export const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));
