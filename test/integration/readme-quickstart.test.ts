/**
 * The README's quick start runs as written. Its commands are read from the README itself:
 * `npm start` is run exactly like that, in the repository, on its default ports (7880 and 8080,
 * which must be free: the test says so rather than picking others), until /healthz answers on
 * both and the URLs the README promises are printed, then stopped with SIGTERM. `npm test` is
 * not run from inside the test suite (it would recurse); instead it must be the test script in
 * package.json and the command CI runs after `npm ci` (.ci/run), which the README also names.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, describe, expect, it } from 'vitest';
import { waitFor } from '../support/wait.ts';

const root = fileURLToPath(new URL('../..', import.meta.url));
const readme = readFileSync(join(root, 'README.md'), 'utf8');

/** The text of a `## Title` section, up to the next `## `. */
function section(title: string): string {
  const start = readme.indexOf(`\n## ${title}\n`);
  if (start < 0) throw new Error(`README.md has no "## ${title}" section`);
  const end = readme.indexOf('\n## ', start + 1);
  return readme.slice(start, end < 0 ? undefined : end);
}

/** Command lines of the ```sh blocks in a piece of Markdown. */
function shellCommands(markdown: string): string[] {
  return [...markdown.matchAll(/```sh\n([\s\S]*?)```/g)].flatMap((m) =>
    (m[1] ?? '').split('\n').map((l) => l.trim()).filter((l) => l && !l.startsWith('#')),
  );
}

async function assertPortFree(port: number): Promise<void> {
  await new Promise<void>((resolve, reject) => {
    const srv = createServer();
    srv.once('error', (err: NodeJS.ErrnoException) =>
      reject(
        new Error(
          `port ${port} on 127.0.0.1 is busy (${err.code}): the README's \`npm start\` uses it by default. ` +
            'Stop whatever listens there (another `npm start`?) and run this test again.',
        ),
      ),
    );
    srv.listen(port, '127.0.0.1', () => srv.close(() => resolve()));
  });
}

function groupAlive(pid: number): boolean {
  try {
    process.kill(-pid, 0);
    return true;
  } catch {
    return false;
  }
}

const quickStart = section('Quick start');
const commands = shellCommands(quickStart);

describe('README quick start', () => {
  it('is exactly the two commands `npm start` and `npm test`', () => {
    expect(commands).toEqual(['npm start', 'npm test']);
  });

  it('names as its test command what package.json runs and what CI runs after `npm ci`', () => {
    const pkg = JSON.parse(readFileSync(join(root, 'package.json'), 'utf8')) as { scripts: Record<string, string> };
    expect(pkg.scripts.test).toMatch(/vitest run/);
    expect(pkg.scripts.test).toMatch(/npm run lint/);
    expect(pkg.scripts.test).toMatch(/npm run typecheck/);
    const ci = readFileSync(join(root, '.ci/run'), 'utf8')
      .split('\n')
      .map((l) => l.trim())
      .filter((l) => l.startsWith('npm '));
    expect(ci).toEqual(['npm ci', commands[1]]);
    // The install step the README gives before the quick start is CI's install step.
    expect(shellCommands(section('Requirements'))).toEqual([ci[0]]);
  });

  describe('`npm start`, run as written', () => {
    let child: ChildProcess | undefined;
    let exited: Promise<string> | undefined;

    /** SIGTERM to npm's whole process group (npm, its shell, Node), as a terminal would send. */
    const stop = async (): Promise<string | undefined> => {
      if (!child?.pid || !groupAlive(child.pid)) return undefined;
      process.kill(-child.pid, 'SIGTERM');
      return await exited;
    };
    afterAll(async () => {
      await stop();
    });

    it('serves /healthz on 7880 and 8080 and /metrics, prints the README\'s URLs, and stops on SIGTERM', async () => {
      for (const url of ['ws://127.0.0.1:7880', 'http://127.0.0.1:8080', '.data/dev-keys.yaml']) {
        expect(quickStart, `README quick start mentions ${url}`).toContain(url);
      }
      await assertPortFree(7880);
      await assertPortFree(8080);
      const env = Object.fromEntries(
        Object.entries(process.env).filter(([k]) => !k.startsWith('LIVEKIT_') && !k.startsWith('BRIDGE_')),
      );
      // As written: split on spaces, no shell of our own (npm brings its own).
      const [program = '', ...args] = (commands[0] ?? '').split(' ');
      child = spawn(program, args, { cwd: root, env, detached: true, stdio: ['ignore', 'pipe', 'pipe'] });
      let out = '';
      child.stdout?.on('data', (d: Buffer) => (out += d.toString()));
      child.stderr?.on('data', (d: Buffer) => (out += d.toString()));
      const proc = child;
      exited = new Promise((resolve) => proc.once('exit', (code, signal) => resolve(signal ?? `code ${code}`)));

      await waitFor(
        'npm start to answer /healthz on 7880 and 8080',
        async () => {
          if (proc.exitCode !== null) throw new Error(`npm start exited with ${proc.exitCode}:\n${out}`);
          const [a, b] = await Promise.all([
            fetch('http://127.0.0.1:7880/healthz').then((r) => r.status, () => 0),
            fetch('http://127.0.0.1:8080/healthz').then((r) => r.status, () => 0),
          ]);
          return a === 200 && b === 200;
        },
        { timeoutMs: 40_000, intervalMs: 100 },
      );
      const metrics = await fetch('http://127.0.0.1:8080/metrics');
      expect(metrics.status).toBe(200);
      expect(await metrics.text()).toMatch(/^# HELP /m);
      await waitFor('the printed URLs', () => out.includes('ws://127.0.0.1:7880') && out.includes('http://127.0.0.1:8080/healthz'));
      expect(out).toContain('dev-keys.yaml');

      // npm re-raises the signal its script died of; a clean exit is fine too.
      expect(['SIGTERM', 'code 0']).toContain(await stop());
      // Every process of the group gone (npm, shell, Node), and both default ports free again.
      const pid = proc.pid ?? 0;
      await waitFor('npm start\'s processes to exit', () => !groupAlive(pid), { timeoutMs: 10_000 });
      await assertPortFree(7880);
      await assertPortFree(8080);
    });
  });
});
