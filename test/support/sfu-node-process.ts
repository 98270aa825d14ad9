/**
 * Starts real SFU processes (`node sfu/main.ts`, config through LIVEKIT_CONFIG) for cluster
 * tests: each on its own loopback HTTP port and its own UDP range, all on one Redis. `kill()`
 * sends a signal to the pid and resolves with the exit code; `stop()` ends it (SIGINT, then
 * SIGKILL). Every node a test starts must be stopped by that test (`stopAll`).
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { stringify } from 'yaml';
import { freePort } from './ports.ts';
import { waitFor } from './wait.ts';
import { suiteWorkerConfig, TEST_API_KEY, TEST_API_SECRET } from './sfu-harness.ts';

const root = fileURLToPath(new URL('../..', import.meta.url));

export interface SfuNodeProcess {
  readonly pid: number;
  readonly port: number;
  /** http://127.0.0.1:port */
  readonly url: string;
  readonly wsUrl: string;
  /** stdout + stderr so far (JSON log lines). */
  log(): string;
  /** The node id from its start-up log line. */
  readonly nodeId: string;
  readonly exited: Promise<number | null>;
  /** Sends `signal` and resolves with the exit code (null when killed by a signal). */
  kill(signal: NodeJS.Signals): Promise<number | null>;
  stop(): Promise<void>;
}

export interface SfuNodeOptions {
  redisPort: number;
  /** First UDP port; the node gets [udpStart, udpStart + 499]. */
  udpStart: number;
  port?: number;
  webhookUrl?: string;
  region?: string;
  /** A TURN server for rtc.turn_servers (coturn with use-auth-secret: credentials minted per participant). */
  turn?: { port: number; secret: string };
  /** Extra top-level config (merged over the defaults here). */
  extra?: Record<string, unknown>;
}

export async function startSfuNode(opts: SfuNodeOptions): Promise<SfuNodeProcess> {
  const port = opts.port ?? (await freePort());
  const config: Record<string, unknown> = {
    port,
    bind_addresses: ['127.0.0.1'],
    keys: { [TEST_API_KEY]: TEST_API_SECRET },
    rtc: {
      node_ip: '127.0.0.1',
      port_range_start: opts.udpStart,
      port_range_end: opts.udpStart + 499,
      ...(opts.turn ? { turn_servers: [{ host: '127.0.0.1', port: opts.turn.port, protocol: 'udp', secret: opts.turn.secret }] } : {}),
    },
    redis: { address: `127.0.0.1:${opts.redisPort}` },
    overload: { cpu_load_limit: 0 },
    logging: { level: 'info' },
    ...(opts.region ? { region: opts.region } : {}),
    ...(opts.webhookUrl ? { webhook: { api_key: TEST_API_KEY, urls: [opts.webhookUrl] } } : {}),
    // SFU_TEST_WORKERS (the suite's second pass): media on worker threads, rooms spread over them.
    ...suiteWorkerConfig(),
    ...opts.extra,
  };
  const child: ChildProcess = spawn(process.execPath, ['sfu/main.ts'], {
    cwd: root,
    env: { PATH: process.env.PATH ?? '', HOME: process.env.HOME ?? '', LIVEKIT_CONFIG: stringify(config) },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let out = '';
  child.stdout?.on('data', (d: Buffer) => (out += d.toString()));
  child.stderr?.on('data', (d: Buffer) => (out += d.toString()));
  const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
  const url = `http://127.0.0.1:${port}`;
  let nodeId = '';
  try {
    nodeId = await waitFor(
      `sfu node on port ${port}`,
      () => {
        if (child.exitCode !== null) throw new Error(`exited ${child.exitCode}: ${out.slice(-2000)}`);
        return /"node":"(ND_[0-9a-f]+)"[^\n]*sfu listening/.exec(out)?.[1];
      },
      { timeoutMs: 20_000, intervalMs: 50 },
    );
  } catch (err) {
    const running = child.exitCode === null;
    child.kill('SIGKILL');
    // A node still running was given up on: what it logged says where its start-up stopped.
    if (running) throw new Error(`${(err as Error).message}; it logged: ${out.slice(-3000) || '(nothing)'}`, { cause: err });
    throw err;
  }
  const kill = async (signal: NodeJS.Signals) => {
    if (child.exitCode === null && child.signalCode === null) child.kill(signal);
    return await exited;
  };
  return {
    pid: child.pid!,
    port,
    url,
    wsUrl: url.replace(/^http/, 'ws'),
    nodeId,
    log: () => out,
    exited,
    kill,
    async stop() {
      if (child.exitCode !== null || child.signalCode !== null) return;
      child.kill('SIGINT');
      const killer = setTimeout(() => child.kill('SIGKILL'), 5000);
      await exited;
      clearTimeout(killer);
    },
  };
}
