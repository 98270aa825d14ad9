/**
 * `npm run bench [-- NAME ...]`: runs benchmarks (not tests: nothing passes or fails on time),
 * prints their figures and writes each one's result to bench/results/NAME.json. Every
 * benchmark is a module bench/NAME.ts exporting `run(): Promise<object>`; with no NAME all of
 * them run, one after another so they do not compete for the two cores.
 */
import { mkdirSync, readdirSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { cpus, totalmem } from 'node:os';

interface BenchModule {
  run(): Promise<object>;
  /** The results file's name when it is not the benchmark's (a mode of it, e.g. `sfu --workers`). */
  resultName?(): string;
}

/** Options whose next argument is their value, not a benchmark name. */
const VALUED_OPTIONS = new Set(['--against', '--workers']);

const here = dirname(fileURLToPath(import.meta.url));
const resultsDir = join(here, 'results');

function available(): string[] {
  return readdirSync(here)
    .filter((f) => f.endsWith('.ts') && f !== 'run.ts' && !f.endsWith('.test.ts') && !f.startsWith('_'))
    .map((f) => f.slice(0, -3))
    .toSorted();
}

async function main(): Promise<number> {
  // Options (and the value of an option that takes one, `--against <ref>`) are the benchmarks' own.
  const args = process.argv.slice(2);
  const names = args.filter((a, i) => !a.startsWith('-') && !VALUED_OPTIONS.has(args[i - 1] ?? ''));
  const all = available();
  const chosen = names.length ? names : all;
  const unknown = chosen.filter((n) => !all.includes(n));
  if (unknown.length) {
    console.error(`unknown benchmark(s): ${unknown.join(', ')}; available: ${all.join(', ') || '(none)'}`);
    return 2;
  }
  mkdirSync(resultsDir, { recursive: true });
  const machine = { cpus: cpus().length, cpuModel: cpus()[0]?.model ?? '', memGiB: Math.round(totalmem() / 2 ** 30), node: process.version };
  for (const name of chosen) {
    console.log(`\n=== bench ${name} ===`);
    const mod = (await import(join(here, `${name}.ts`))) as BenchModule;
    const started = new Date().toISOString();
    const result = await mod.run();
    const resultName = mod.resultName?.() ?? name;
    const file = join(resultsDir, `${resultName}.json`);
    writeFileSync(file, `${JSON.stringify({ name: resultName, started, machine, result }, null, 2)}\n`);
    console.log(JSON.stringify(result, null, 2));
    console.log(`wrote ${file}`);
  }
  return 0;
}

main().then(
  (code) => {
    process.exitCode = code;
  },
  (err: unknown) => {
    console.error('bench: failed:', err);
    process.exitCode = 1;
  },
);
