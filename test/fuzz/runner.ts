/**
 * Runs a fuzz target for a number of cases with fast-check and measures it: cases per second,
 * the slowest case, cases slower than the stall threshold, crashes (an unexpected exception,
 * with the input that caused it) and heap use after a forced GC before and after. Used by the
 * per-target child process of `npm run fuzz` and, with few cases, by the seeded smoke test in
 * `npm test`. Heap figures need `--expose-gc`; without it they are reported as absent.
 */
import { performance } from 'node:perf_hooks';
import fc from 'fast-check';
import type { FuzzTarget } from './target.ts';

/** A case slower than this counts as a stall (a hang is the parent's watchdog firing). */
export const STALL_MS = 1_000;

export interface TargetResult {
  target: string;
  description: string;
  seed: number;
  cases: number;
  crashes: number;
  stalls: number;
  maxCaseMs: number;
  casesPerSecond: number;
  durationSeconds: number;
  heapStartMB?: number;
  heapEndMB?: number;
  heapAfterTeardownMB?: number;
  /** (end - start) / start, in percent, measured with the target still set up. */
  heapGrowthPercent?: number;
  firstCrash?: { error: string; input: string };
  /** The input of the slowest case (to tell a slow corner from a busy machine). */
  slowestInput?: string;
  stats?: Record<string, number>;
}

function heapMB(): number | undefined {
  const gc = (globalThis as { gc?: () => void }).gc;
  if (!gc) return undefined;
  gc();
  gc();
  return process.memoryUsage().heapUsed / 2 ** 20;
}

function show(input: unknown): string {
  try {
    if (input instanceof Uint8Array) return `bytes:${Buffer.from(input).toString('base64')}`;
    const text =
      typeof input === 'string'
        ? input
        : JSON.stringify(input, (_k, v: unknown) => (v instanceof Uint8Array ? `bytes:${Buffer.from(v).toString('base64')}` : v));
    return (text ?? String(input)).slice(0, 4000);
  } catch {
    return String(input).slice(0, 4000);
  }
}

const round = (n: number | undefined, d = 2) => (n === undefined ? undefined : Number(n.toFixed(d)));

export async function runTarget(
  target: FuzzTarget,
  opts: { cases: number; seed: number; progress?: (done: number) => void },
): Promise<TargetResult> {
  const c = await target.setup();
  const arbitrary = c.arbitrary ?? target.arbitrary();
  let done = 0;
  let stalls = 0;
  let maxCaseMs = 0;
  let lastProgress = 0;
  let firstCrash: TargetResult['firstCrash'];

  let slowest: unknown;
  const tick = (t0: number, input: unknown) => {
    const ms = performance.now() - t0;
    if (ms > maxCaseMs) {
      maxCaseMs = ms;
      slowest = input;
    }
    if (ms > STALL_MS) stalls++;
    done++;
    if (opts.progress && (done % 256 === 0 || ms > 100)) {
      const now = Date.now();
      if (now - lastProgress >= 1000) {
        lastProgress = now;
        opts.progress(done);
      }
    }
  };
  const crashed = (err: unknown, input: unknown) => {
    firstCrash ??= { error: err instanceof Error ? `${err.name}: ${err.message}\n${err.stack ?? ''}`.slice(0, 4000) : String(err), input: show(input) };
  };

  /** Whether a case passed: it returned, or threw an error the target documents. */
  const judge = (input: unknown, t0: number, thrown?: { err: unknown }): boolean => {
    tick(t0, input);
    if (!thrown || c.expected(thrown.err)) return true;
    const { err } = thrown;
    crashed(err, input);
    return false;
  };
  const runSync = (numRuns: number, seed: number) =>
    fc.check(
      fc.property(arbitrary, (input) => {
        const t0 = performance.now();
        try {
          c.one(input);
        } catch (err) {
          return judge(input, t0, { err });
        }
        return judge(input, t0);
      }),
      { numRuns, seed, endOnFailure: true },
    );
  const runAsync = (numRuns: number, seed: number) =>
    fc.check(
      fc.asyncProperty(arbitrary, async (input) => {
        const t0 = performance.now();
        try {
          await c.one(input);
        } catch (err) {
          return judge(input, t0, { err });
        }
        return judge(input, t0);
      }),
      { numRuns, seed, endOnFailure: true },
    );
  const run = async (numRuns: number, seed: number) => {
    if (numRuns <= 0) return;
    if (target.async) await runAsync(numRuns, seed);
    else runSync(numRuns, seed);
  };

  const started = performance.now();
  const warm = Math.min(opts.cases, Math.max(100, Math.floor(opts.cases * 0.02)));
  await run(warm, opts.seed);
  const heapStartMB = heapMB();
  if (!firstCrash) await run(opts.cases - warm, opts.seed + 1);
  const durationSeconds = (performance.now() - started) / 1000;
  const heapEndMB = heapMB();
  const stats = c.stats?.();
  try {
    await c.teardown();
  } catch (err) {
    crashed(err, '(teardown: the final check after all cases)');
  }
  const heapAfterTeardownMB = heapMB();
  opts.progress?.(done);
  return {
    target: target.name,
    description: target.description,
    seed: opts.seed,
    cases: done,
    crashes: firstCrash ? 1 : 0,
    stalls,
    maxCaseMs: round(maxCaseMs)!,
    casesPerSecond: Math.round(done / durationSeconds),
    durationSeconds: round(durationSeconds, 1)!,
    heapStartMB: round(heapStartMB),
    heapEndMB: round(heapEndMB),
    heapAfterTeardownMB: round(heapAfterTeardownMB),
    heapGrowthPercent:
      heapStartMB !== undefined && heapEndMB !== undefined ? round(((heapEndMB - heapStartMB) / heapStartMB) * 100, 1) : undefined,
    ...(firstCrash ? { firstCrash } : {}),
    ...(maxCaseMs > STALL_MS / 10 ? { slowestInput: show(slowest).slice(0, 2000) } : {}),
    ...(stats ? { stats } : {}),
  };
}
