/**
 * Logging for every process: pino, JSON lines on stdout, one child logger per component, room
 * or participant. Secrets never reach a log line: the redaction list below covers the field
 * names our code and the clients use for tokens, secrets and OpenID credentials, and every
 * string written (the message, error messages and stacks, field values four levels deep) is
 * scrubbed of what a secret looks like inside text: JWTs, `Bearer` credentials and
 * `access_token=` / `token=` / `secret=` / `password=` / `jwt=` URL parameters.
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

const JWT_IN_TEXT = /eyJ[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*/g;
const BEARER_IN_TEXT = /\b(Bearer\s+)[^\s"',;]+/gi;
const SECRET_PARAM_IN_TEXT = /([?&;](?:access_token|token|jwt|secret|password)=)[^&\s#"']+/gi;

/** `text` with JWTs, Bearer credentials and secret URL parameters replaced. */
export function scrubSecrets(text: string): string {
  if (!text.includes('eyJ') && !/bearer|=/i.test(text)) return text;
  return text.replace(SECRET_PARAM_IN_TEXT, '$1[redacted]').replace(BEARER_IN_TEXT, '$1[redacted]').replace(JWT_IN_TEXT, '[redacted jwt]');
}

/** A copy of `value` with every string scrubbed, `depth` levels deep; errors are left to `err`. */
function scrubValue(value: unknown, depth: number): unknown {
  if (typeof value === 'string') return scrubSecrets(value);
  if (depth === 0 || value === null || typeof value !== 'object' || value instanceof Error) return value;
  if (Array.isArray(value)) return value.map((v) => scrubValue(v, depth - 1));
  if (Object.getPrototypeOf(value) !== Object.prototype && Object.getPrototypeOf(value) !== null) return value;
  const out: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(value)) out[k] = scrubValue(v, depth - 1);
  return out;
}

function errSerializer(err: unknown): unknown {
  const s = pino.stdSerializers.err(err as Error) as unknown;
  if (s === null || typeof s !== 'object') return typeof s === 'string' ? scrubSecrets(s) : s;
  // pino's serialized error has its own prototype; copy its fields so they are walked.
  return scrubValue({ ...(s as Record<string, unknown>) }, 4);
}

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
      serializers: { err: errSerializer, msg: (m: unknown) => (typeof m === 'string' ? scrubSecrets(m) : m) },
      formatters: { log: (obj) => scrubValue(obj, 4) as Record<string, unknown> },
    },
    opts.destination ?? pino.destination({ dest: 1, sync: opts.sync ?? false }),
  );
}

/** A logger that drops everything, for tests that do not look at logs. */
export function createSilentLogger(): Logger {
  return pino({ level: 'silent' });
}
