/**
 * What every process entry point (each `main.ts`) shares: run `main()` and turn its outcome into
 * the exit code (a ConfigError prints its problems and exits 1), wait for SIGINT/SIGTERM, and
 * the process-level fault nets. Only main.ts files call these.
 *
 * Faults, decided like this (and logged through the redacting logger, counted in
 * `matrixrtc_faults_total` on the registry handed to `main`):
 * - An exception in one request's code never gets here: each listener's express error handler
 *   (common/http.ts) answers that request 500 and logs it once.
 * - An unhandled promise rejection is a promise chain that lost its `catch`: the code that made
 *   it has already returned and no synchronous invariant broke, so it is logged at error level,
 *   counted, and the process keeps serving every other call.
 * - An uncaught exception thrown outside any request (a timer, a socket or werift callback) means
 *   a stack unwound through code that expected to finish: state may be half-updated and Node
 *   documents that resuming is unsafe. The process logs it at fatal level (synchronously),
 *   counts it and exits with code 1, as Node's default does and as a Go panic ends LiveKit, so
 *   the supervisor (Docker, systemd, Kubernetes) restarts a clean process.
 */
import type { Registry } from 'prom-client';
import { ConfigError } from './config.ts';
import { createLogger, type Logger } from './logger.ts';
import { createMetricsRegistry, faultCounter } from './metrics.ts';

/** Handed to `main`: the process's fault logger and the registry its fault counter lives in. */
export interface ProcessContext {
  /** Logger of the process-level nets (redacting, synchronous stdout). */
  readonly logger: Logger;
  /** Registry (with Node's default metrics) holding the fault counter; serve it on `/metrics`. */
  readonly metrics: Registry;
}

/** Exit code after an uncaught exception (Node's own for that case). */
export const UNCAUGHT_EXIT_CODE = 1;

export function untilShutdownSignal(): Promise<NodeJS.Signals> {
  return new Promise((resolve) => {
    process.once('SIGINT', () => resolve('SIGINT'));
    process.once('SIGTERM', () => resolve('SIGTERM'));
  });
}

export function runMain(name: string, main: (proc: ProcessContext) => Promise<number>): void {
  const logger = createLogger({ name, sync: true }).child({ component: 'process' });
  const metrics = createMetricsRegistry();
  const faults = faultCounter(metrics);
  process.on('unhandledRejection', (reason) => {
    faults.inc({ kind: 'unhandled_rejection' });
    logger.error({ err: reason }, 'unhandled promise rejection; kept running');
  });
  process.on('uncaughtException', (err, origin) => {
    faults.inc({ kind: 'uncaught_exception' });
    logger.fatal({ err, origin }, `uncaught exception outside any request; exiting with code ${UNCAUGHT_EXIT_CODE} so the supervisor restarts the process`);
    process.exit(UNCAUGHT_EXIT_CODE);
  });
  main({ logger, metrics }).then(
    (code) => {
      process.exitCode = code;
    },
    (err: unknown) => {
      if (err instanceof ConfigError) {
        console.error(`${name}: ${err.message}`);
      } else {
        logger.fatal({ err }, 'fatal error while starting or stopping');
      }
      process.exitCode = 1;
    },
  );
}
