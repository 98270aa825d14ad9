/**
 * Captures what a logger writes: a pino destination keeping every JSON line, parsed, so a test
 * can count lines or grep them for secrets. Pass `capture.stream` as `createLogger`'s destination.
 */
import { Writable } from 'node:stream';

export interface LogCapture {
  readonly stream: Writable;
  /** Every line written so far, raw. */
  text(): string;
  lines(): Record<string, unknown>[];
}

export function captureLogs(): LogCapture {
  const chunks: string[] = [];
  const stream = new Writable({
    write(chunk: Buffer | string, _enc, cb) {
      chunks.push(chunk.toString());
      cb();
    },
  });
  return {
    stream,
    text: () => chunks.join(''),
    lines: () =>
      chunks
        .join('')
        .split('\n')
        .filter(Boolean)
        .map((l) => JSON.parse(l) as Record<string, unknown>),
  };
}
