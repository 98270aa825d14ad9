/**
 * A project logger (common/logger.ts, redaction included) whose JSON lines are kept in memory,
 * so a test can count what was logged at which level.
 */
import { createLogger, type Logger } from '../../common/logger.ts';

export interface CapturedLog {
  logger: Logger;
  /** Parsed lines so far. */
  lines: { level: number; msg: string; [k: string]: unknown }[];
  /** Lines at `level` or above (pino levels: 30 info, 40 warn, 50 error). */
  atLeast(level: number): CapturedLog['lines'];
}

export function captureLog(level: 'debug' | 'info' | 'warn' = 'info'): CapturedLog {
  const lines: CapturedLog['lines'] = [];
  const logger = createLogger({
    name: 'sfu',
    level,
    destination: {
      write(chunk: string) {
        for (const line of chunk.split('\n')) if (line.trim()) lines.push(JSON.parse(line) as CapturedLog['lines'][number]);
      },
    },
  });
  return { logger, lines, atLeast: (l) => lines.filter((x) => x.level >= l) };
}
