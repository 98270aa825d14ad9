/**
 * Starts Debian's coturn (`/usr/bin/turnserver`) on loopback for a test: TURN REST API
 * credentials (`use-auth-secret` with a static secret, as rtc.turn_servers `secret` expects),
 * UDP only, its own listening port and relay range, loopback peers allowed (the SFU is on
 * 127.0.0.1). `allocations()` counts the relay allocations coturn logged; `stop()` ends it by
 * pid. Installed by `npm test` through test/setup/ensure-system-deps.ts.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { freePort } from './ports.ts';
import { waitFor } from './wait.ts';

export const TURNSERVER_BIN = '/usr/bin/turnserver';

export interface RunningCoturn {
  port: number;
  secret: string;
  /** Allocations coturn reported as created so far. */
  allocations(): number;
  log(): string;
  stop(): Promise<void>;
}

export async function startCoturn(opts: { relayMinPort: number; relayMaxPort: number }): Promise<RunningCoturn> {
  const port = await freePort();
  const secret = randomBytes(24).toString('base64url');
  const child: ChildProcess = spawn(
    TURNSERVER_BIN,
    [
      '-n',
      '--listening-ip', '127.0.0.1',
      '--relay-ip', '127.0.0.1',
      '--listening-port', String(port),
      '--min-port', String(opts.relayMinPort),
      '--max-port', String(opts.relayMaxPort),
      '--use-auth-secret',
      '--static-auth-secret', secret,
      '--realm', 'test.invalid',
      '--fingerprint',
      '--no-tls',
      '--no-dtls',
      '--no-tcp-relay',
      '--no-cli',
      '--pidfile', join(tmpdir(), `turnserver-${port}.pid`),
      '--allow-loopback-peers',
      '--log-file', 'stdout',
      '--simple-log',
      '--verbose',
    ],
    { stdio: ['ignore', 'pipe', 'pipe'] },
  );
  let out = '';
  child.stdout?.on('data', (d: Buffer) => (out += d.toString()));
  child.stderr?.on('data', (d: Buffer) => (out += d.toString()));
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  try {
    await waitFor(`coturn on port ${port}`, () => {
      if (child.exitCode !== null) throw new Error(`turnserver exited ${child.exitCode}: ${out.slice(-1500)}`);
      return new RegExp(`UDP listener opened on: 127\\.0\\.0\\.1:${port}`).test(out);
    }, { timeoutMs: 10_000, intervalMs: 50 });
  } catch (err) {
    child.kill('SIGKILL');
    throw err;
  }
  return {
    port,
    secret,
    allocations: () => (out.match(/ALLOCATE processed, success/g) ?? []).length,
    log: () => out,
    async stop() {
      if (child.exitCode !== null || child.signalCode !== null) return;
      child.kill('SIGTERM');
      const killer = setTimeout(() => child.kill('SIGKILL'), 3000);
      await exited;
      clearTimeout(killer);
    },
  };
}
