/**
 * Runs one fuzz target in its own process (started by test/fuzz/run.ts with --expose-gc):
 * `node --expose-gc test/fuzz/child.ts TARGET CASES SEED PROGRESS_FILE RESULT_FILE`.
 * A warm-up (2 % of the cases) lets the JIT settle, then the heap is measured after a full GC,
 * the rest of the cases run, and the heap is measured again while the target is still set up
 * (state it keeps would show) and once more after teardown. Progress is written synchronously
 * to PROGRESS_FILE at least every second so the parent can tell a hang from a slow target; the
 * first crash stops the target (without shrinking) and is written with its input.
 */
import { writeFileSync } from 'node:fs';
import { runTarget } from './runner.ts';
import { TARGETS } from './targets/index.ts';

const [name, casesText, seedText, progressFile, resultFile] = process.argv.slice(2);
const target = TARGETS.find((t) => t.name === name);
if (!target || !casesText || !seedText || !progressFile || !resultFile) {
  console.error(`usage: child.ts TARGET CASES SEED PROGRESS_FILE RESULT_FILE (targets: ${TARGETS.map((t) => t.name).join(', ')})`);
  process.exit(2);
}
const result = await runTarget(target, {
  cases: Number(casesText),
  seed: Number(seedText),
  progress: (done) => writeFileSync(progressFile, `${done}\n`),
});
writeFileSync(resultFile, `${JSON.stringify(result)}\n`);
process.exit(0);
