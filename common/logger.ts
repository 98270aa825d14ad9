/**
 * Logging for every process: pino, JSON lines on stdout, one child logger per component, room
 * or participant. Secrets never reach a log line: the redaction list below covers the field
 * names our code and the clients use for tokens, secrets and OpenID credentials.
 */
import { pino, type Logger, type DestinationStream } from 'pino';

export type { Logger } from 'pino';

export const LOG_LEVELS = ['trace', 'debug', 'info', 'warn', 'error', 'fatal', 'silent'] as const;
export type LogLevel = (typeof LOG_LEVELS)[number];

/** Field names whose values are secrets wherever they appear (two levels deep). */
const SECRET_FIELDS = [
  'access_token',
  'accessToken',
  'token',
  'jwt',
  'secret',
  'password',
  'as_token',
  'hs_token',
  'authorization',
  'Authorization',
  'openid_token',
  'api_secret',
  'credential',
];

export const REDACT_PATHS: string[] = SECRET_FIELDS.flatMap((f) => [f, `*.${f}`, `*.*.${f}`]);

export interface LoggerOptions {
  level?: LogLevel;
  name: string;
  /** Where lines go; defaults to stdout. Tests pass a stream to inspect output. */
  destination?: DestinationStream;
  /** Write stdout synchronously (a line logged just before `process.exit` is not lost). */
  sync?: boolean;
}

export function createLogger(opts: LoggerOptions): Logger {
  return pino(
    {
      name: opts.name,
      level: opts.level ?? 'info',
      redact: { paths: REDACT_PATHS, censor: '[redacted]' },
      base: { pid: process.pid },
    },
    opts.destination ?? pino.destination({ dest: 1, sync: opts.sync ?? false }),
  );
}

/** A logger that drops everything, for tests that do not look at logs. */
export function createSilentLogger(): Logger {
  return pino({ level: 'silent' });
}
