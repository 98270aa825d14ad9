/**
 * Media-worker test hook: worker `worker` throws while it starts (before it is ready), its first
 * `failures` times, as a worker with a broken import would; every start of every worker is
 * recorded as a line `<index> <epoch ms>` in `file`, so a test can see when each attempt began.
 */
import { appendFileSync, readFileSync } from 'node:fs';
import { workerData } from 'node:worker_threads';

export default function hooks(data: { file: string; worker: number; failures: number }) {
  const index = (workerData as { index: number }).index;
  appendFileSync(data.file, `${index} ${Date.now()}\n`);
  const starts = readFileSync(data.file, 'utf8')
    .split('\n')
    .filter((l) => l.startsWith(`${index} `)).length;
  if (index === data.worker && starts <= data.failures) throw new Error(`test hook: media worker ${index} fails its start ${starts}`);
  return {};
}
