/**
 * The process contract operators rely on: `--validate` exits 0/1 with the bad key named, and
 * the embedded default (`npm start`'s entry point) serves /healthz on both listeners and
 * /metrics, then stops cleanly on SIGTERM.
 */
import { spawn, spawnSync } from 'node:child_process';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { freePort } from '../support/ports.ts';
import { waitFor } from '../support/wait.ts';

const root = fileURLToPath(new URL('../..', import.meta.url));
const SECRET = 'x'.repeat(32);

function runNode(args: string[], env: Record<string, string> = {}) {
  const cleanEnv = Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith('LIVEKIT_') && !k.startsWith('BRIDGE_')));
  return spawnSync(process.execPath, args, { cwd: root, env: { ...cleanEnv, ...env }, encoding: 'utf8', timeout: 30_000 });
}

function configFile(text: string): string {
  const dir = mkdtempSync(join(tmpdir(), 'proc-cfg-'));
  const file = join(dir, 'sfu.yaml');
  writeFileSync(file, text);
  return file;
}

describe('sfu --validate', () => {
  it('accepts a good config with exit code 0', () => {
    const r = runNode(['sfu/main.ts', '--config', configFile(`keys:\n  k: ${SECRET}\n`), '--validate']);
    expect(r.stderr).toBe('');
    expect(r.status).toBe(0);
  });

  it.each([
    ['an unknown key', `keys: {k: ${SECRET}}\nrtc: {prot_range_start: 1}\n`, 'rtc.prot_range_start: unknown key'],
    ['a reversed port range', `keys: {k: ${SECRET}}\nrtc: {port_range_start: 60000, port_range_end: 50000}\n`, 'rtc.port_range_start must be below rtc.port_range_end'],
    ['a short secret', 'keys: {k: short}\n', 'keys.k: secret is 5 characters'],
  ])('stops with exit code 1 on %s, naming the key', (_n, yaml, message) => {
    const r = runNode(['sfu/main.ts', '--config', configFile(yaml), '--validate']);
    expect(r.status).toBe(1);
    expect(r.stderr).toContain(message);
  });

  it('reads LIVEKIT_CONFIG and LIVEKIT_KEYS from the environment', () => {
    const bad = runNode(['sfu/main.ts', '--validate'], { LIVEKIT_CONFIG: 'port: 7880\n', LIVEKIT_KEYS: 'k: short' });
    expect(bad.status).toBe(1);
    expect(bad.stderr).toContain('keys.k: secret is 5 characters');
    const good = runNode(['sfu/main.ts', '--validate'], { LIVEKIT_CONFIG: 'port: 7880\n', LIVEKIT_KEYS: `k: ${SECRET}` });
    expect(good.status).toBe(0);
  });
});

describe('bridge --validate', () => {
  it('names each missing lk-jwt-service variable', () => {
    const r = runNode(['bridge/main.ts', '--validate']);
    expect(r.status).toBe(1);
    for (const v of ['LIVEKIT_URL', 'LIVEKIT_KEY', 'LIVEKIT_SECRET', 'LIVEKIT_FULL_ACCESS_HOMESERVERS']) {
      expect(r.stderr).toContain(`${v}: required`);
    }
  });

  it('accepts a complete environment', () => {
    const r = runNode(['bridge/main.ts', '--validate'], {
      LIVEKIT_URL: 'ws://127.0.0.1:7880',
      LIVEKIT_KEY: 'k',
      LIVEKIT_SECRET: SECRET,
      LIVEKIT_FULL_ACCESS_HOMESERVERS: '*',
    });
    expect(r.stderr).toBe('');
    expect(r.status).toBe(0);
  });
});

describe('embedded default', () => {
  it('serves /healthz on the SFU and bridge listeners and /metrics, prints its URLs, and stops on SIGTERM', async () => {
    const [sfuPort, bridgePort] = [await freePort(), await freePort()];
    const dataDir = mkdtempSync(join(tmpdir(), 'embedded-'));
    const child = spawn(
      process.execPath,
      ['embedded/main.ts', '--data-dir', dataDir, '--sfu-port', String(sfuPort), '--bridge-port', String(bridgePort)],
      { cwd: root, stdio: ['ignore', 'pipe', 'pipe'] },
    );
    let out = '';
    child.stdout.on('data', (d: Buffer) => (out += d.toString()));
    child.stderr.on('data', (d: Buffer) => (out += d.toString()));
    const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
    try {
      await waitFor('embedded listeners', async () => {
        const [a, b] = await Promise.all([
          fetch(`http://127.0.0.1:${sfuPort}/healthz`).then((r) => r.status, () => 0),
          fetch(`http://127.0.0.1:${bridgePort}/healthz`).then((r) => r.status, () => 0),
        ]);
        return a === 200 && b === 200;
      }, { timeoutMs: 20_000, intervalMs: 100 });
      const metrics = await fetch(`http://127.0.0.1:${bridgePort}/metrics`).then((r) => r.text());
      expect(metrics).toContain('process_cpu_user_seconds_total');
      expect((await fetch(`http://127.0.0.1:${sfuPort}/healthz`, { method: 'POST' })).status).toBe(405);
      expect(out).toContain(`ws://127.0.0.1:${sfuPort}`);
      expect(out).toContain(`http://127.0.0.1:${bridgePort}`);
      expect(out).toContain('dev-keys.yaml, just created');
      expect(out).toContain(`http://127.0.0.1:${sfuPort}/test/`);
      expect((await fetch(`http://127.0.0.1:${sfuPort}/test/`)).status).toBe(200);
    } finally {
      child.kill('SIGTERM');
    }
    expect(await exited).toBe(0);
  });
});

describe('process-level faults (common/process.ts runMain)', () => {
  const FAULT_SECRET = 'syt_faulty_main_secret_0123456789';
  function startFaulty() {
    const child = spawn(process.execPath, ['test/support/faulty-main.ts', FAULT_SECRET], { cwd: root, stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    let err = '';
    child.stdout.on('data', (d: Buffer) => (out += d.toString()));
    child.stderr.on('data', (d: Buffer) => (err += d.toString()));
    const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
    return {
      child,
      exited,
      output: () => out + err,
      jsonLines: () => out.split('\n').filter((l) => l.startsWith('{')).map((l) => JSON.parse(l) as Record<string, unknown>),
      port: async () => {
        await waitFor('faulty process ready', () => /ready \d+/.test(out), { timeoutMs: 20_000, intervalMs: 50 });
        return Number(/ready (\d+)/.exec(out)![1]);
      },
    };
  }

  it('exits with code 1 after an uncaught exception outside any request, logging it once through the redacting logger', async () => {
    const p = startFaulty();
    try {
      const port = await p.port();
      await fetch(`http://127.0.0.1:${port}/throw`).then((r) => r.text());
      expect(await p.exited).toBe(1);
    } finally {
      p.child.kill('SIGKILL');
    }
    const fatal = p.jsonLines().filter((l) => l.level === 60);
    expect(fatal).toHaveLength(1);
    expect(fatal[0]!.msg).toContain('uncaught exception outside any request');
    expect((fatal[0]!.err as { message: string }).message).toBe('/throw on demand');
    expect((fatal[0]!.err as { access_token: string }).access_token).toBe('[redacted]');
    expect(p.output()).not.toContain(FAULT_SECRET);
  });

  it('keeps running after an unhandled rejection, logs it through the logger and counts it in /metrics', async () => {
    const p = startFaulty();
    try {
      const port = await p.port();
      await fetch(`http://127.0.0.1:${port}/reject`).then((r) => r.text());
      await waitFor('the rejection logged', () => p.jsonLines().some((l) => l.level === 50), { timeoutMs: 5_000, intervalMs: 20 });
      const metrics = await fetch(`http://127.0.0.1:${port}/metrics`).then((r) => r.text());
      expect(metrics).toContain('matrixrtc_faults_total{kind="unhandled_rejection"} 1');
      const logged = p.jsonLines().filter((l) => l.level === 50);
      expect(logged).toHaveLength(1);
      expect(logged[0]!.msg).toBe('unhandled promise rejection; kept running');
      expect(p.output()).not.toContain(FAULT_SECRET);
      p.child.kill('SIGTERM');
      expect(await p.exited).toBe(0);
    } finally {
      p.child.kill('SIGKILL');
    }
  });
});
