/**
 * What every process entry point (each `main.ts`) shares: run `main()` and turn its outcome into
 * the exit code (a ConfigError prints its problems and exits 1), wait for SIGINT/SIGTERM, and a
 * last-resort net so one stray exception in a callback (a werift event, a socket) is logged
 * instead of ending every call on the server. Only main.ts files call these.
 */
import { ConfigError } from './config.ts';

export function untilShutdownSignal(): Promise<NodeJS.Signals> {
  return new Promise((resolve) => {
    process.once('SIGINT', () => resolve('SIGINT'));
    process.once('SIGTERM', () => resolve('SIGTERM'));
  });
}

export function runMain(name: string, main: () => Promise<number>): void {
  process.on('unhandledRejection', (reason) => {
    console.error(`${name}: unhandled rejection (kept running):`, reason);
  });
  process.on('uncaughtException', (err) => {
    console.error(`${name}: uncaught exception (kept running):`, err);
  });
  main().then(
    (code) => {
      process.exitCode = code;
    },
    (err: unknown) => {
      if (err instanceof ConfigError) {
        console.error(`${name}: ${err.message}`);
      } else {
        console.error(`${name}: fatal:`, err);
      }
      process.exitCode = 1;
    },
  );
}
