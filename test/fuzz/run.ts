/**
 * `npm run fuzz [-- TARGET ...] [--cases N] [--seed N]`: drives every parser and entry point
 * with generated and mutated input (fast-check), one target at a time, each in its own process
 * so a crash, a hang or a leak in one says which. Default 1,000,000 cases per target. A target
 * whose process reports no progress for 30 s is killed and counted as a hang. Figures go to
 * bench/results/fuzz.json; the exit code is 1 when any target crashed, hung, stalled or grew
 * its heap by more than 10 %. Not part of `npm test` (test/unit/fuzz-smoke.test.ts runs every
 * pure target briefly with a fixed seed instead).
 */
import { fork } from 'node:child_process';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { cpus, tmpdir, totalmem } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { TargetResult } from './runner.ts';
import { TARGETS } from './targets/index.ts';

const HANG_MS = 30_000;
const MAX_HEAP_GROWTH_PERCENT = 10;
const here = dirname(fileURLToPath(import.meta.url));
const resultsFile = join(here, '..', '..', 'bench', 'results', 'fuzz.json');

function option(args: string[], name: string, fallback: number): number {
  const i = args.indexOf(name);
  if (i < 0) return fallback;
  const n = Number(args[i + 1]);
  if (!Number.isSafeInteger(n) || n <= 0) throw new Error(`${name} needs a positive whole number`);
  return n;
}

async function runChild(name: string, cases: number, seed: number, dir: string): Promise<TargetResult | { target: string; hang: true; cases: number } | { target: string; exitCode: number | null; cases: number }> {
  const progress = join(dir, `${name}.progress`);
  const result = join(dir, `${name}.json`);
  writeFileSync(progress, '0\n');
  const child = fork(join(here, 'child.ts'), [name, String(cases), String(seed), progress, result], {
    execArgv: ['--expose-gc', '--max-old-space-size=2048'],
    stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
  });
  const casesDone = () => Number(readFileSync(progress, 'utf8').trim()) || 0;
  return await new Promise((resolve) => {
    let hung = false;
    const watchdog = setInterval(() => {
      if (Date.now() - statSync(progress).mtimeMs > HANG_MS) {
        hung = true;
        child.kill('SIGKILL');
      }
    }, 1000);
    child.on('exit', (code) => {
      clearInterval(watchdog);
      if (hung) return resolve({ target: name, hang: true, cases: casesDone() });
      try {
        resolve(JSON.parse(readFileSync(result, 'utf8')) as TargetResult);
      } catch {
        resolve({ target: name, exitCode: code, cases: casesDone() });
      }
    });
  });
}

async function main(): Promise<number> {
  const args = process.argv.slice(2);
  const cases = option(args, '--cases', 1_000_000);
  const seed = option(args, '--seed', 20261201);
  const optionValues = new Set(['--cases', '--seed'].flatMap((o) => (args.includes(o) ? [args[args.indexOf(o) + 1]] : [])));
  const names = args.filter((a) => !a.startsWith('--') && !optionValues.has(a));
  const unknown = names.filter((n) => !TARGETS.some((t) => t.name === n));
  if (unknown.length) {
    console.error(`unknown fuzz target(s): ${unknown.join(', ')}; available: ${TARGETS.map((t) => t.name).join(', ')}`);
    return 2;
  }
  const chosen = names.length ? names : TARGETS.map((t) => t.name);
  const dir = mkdtempSync(join(tmpdir(), 'fuzz-'));
  const results = [];
  let bad = 0;
  try {
    for (const name of chosen) {
      console.log(`fuzz ${name}: ${cases} cases, seed ${seed}`);
      const r = await runChild(name, cases, seed, dir);
      results.push(r);
      const ok =
        'crashes' in r && r.crashes === 0 && r.stalls === 0 && (r.heapGrowthPercent ?? 0) <= MAX_HEAP_GROWTH_PERCENT;
      if (!ok) bad++;
      console.log(`fuzz ${name}: ${ok ? 'ok' : 'FAILED'} ${JSON.stringify(r)}`);
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
  mkdirSync(dirname(resultsFile), { recursive: true });
  const machine = { cpus: cpus().length, cpuModel: cpus()[0]?.model ?? '', memGiB: Math.round(totalmem() / 2 ** 30), node: process.version };
  writeFileSync(
    resultsFile,
    `${JSON.stringify({ name: 'fuzz', started: new Date().toISOString(), machine, tool: 'fast-check', casesPerTarget: cases, seed, maxHeapGrowthPercent: MAX_HEAP_GROWTH_PERCENT, hangMs: HANG_MS, results }, null, 2)}\n`,
  );
  console.log(`wrote ${resultsFile}; ${bad} target(s) failed`);
  return bad ? 1 : 0;
}

main().then(
  (code) => {
    process.exitCode = code;
  },
  (err: unknown) => {
    console.error('fuzz: failed:', err);
    process.exitCode = 1;
  },
);
