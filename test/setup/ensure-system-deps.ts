/**
 * Makes sure the programs the tests drive, but npm cannot install, are on this machine:
 * Debian's `redis-server` (real Redis for the store tests) and `chromium` (headless browser
 * running the real livekit-client). When one is missing and we run as root on a Debian-like
 * system, it is installed with apt-get; otherwise the script names what is missing and how to
 * get it, and exits non-zero so `npm test` stops before any test runs.
 */
import { execFileSync, spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';

interface SystemDependency {
  /** Debian package name. */
  readonly pkg: string;
  /** Absolute path of the executable the tests use. */
  readonly bin: string;
  /** Why the tests need it, for the error message. */
  readonly why: string;
}

const DEPENDENCIES: readonly SystemDependency[] = [
  { pkg: 'redis-server', bin: '/usr/bin/redis-server', why: 'Redis-backed store tests' },
  { pkg: 'chromium', bin: '/usr/bin/chromium', why: 'browser tests with livekit-client' },
  { pkg: 'coturn', bin: '/usr/bin/turnserver', why: 'TURN relay test (rtc.turn_servers secret credentials)' },
];

function missingDependencies(): SystemDependency[] {
  return DEPENDENCIES.filter((dep) => !existsSync(dep.bin));
}

function isRoot(): boolean {
  return typeof process.getuid === 'function' && process.getuid() === 0;
}

function hasAptGet(): boolean {
  return spawnSync('apt-get', ['--version'], { stdio: 'ignore' }).status === 0;
}

function aptInstall(pkgs: string[]): void {
  const env = { ...process.env, DEBIAN_FRONTEND: 'noninteractive' };
  console.log(`[ensure-system-deps] apt-get install ${pkgs.join(' ')} (first run only)`);
  execFileSync('apt-get', ['update', '-q'], { stdio: 'inherit', env });
  execFileSync('apt-get', ['install', '-y', '-q', '--no-install-recommends', ...pkgs], {
    stdio: 'inherit',
    env,
  });
}

function main(): number {
  const missing = missingDependencies();
  if (missing.length === 0) return 0;
  const pkgs = missing.map((dep) => dep.pkg);
  if (isRoot() && hasAptGet()) {
    try {
      aptInstall(pkgs);
    } catch (err) {
      console.error(`[ensure-system-deps] apt-get failed: ${(err as Error).message}`);
    }
  }
  const stillMissing = missingDependencies();
  if (stillMissing.length === 0) return 0;
  console.error('[ensure-system-deps] The tests need programs that npm cannot install:');
  for (const dep of stillMissing) {
    console.error(`  - ${dep.bin} (Debian package "${dep.pkg}", for the ${dep.why})`);
  }
  console.error(
    `Install them with:  sudo apt-get install -y ${stillMissing.map((d) => d.pkg).join(' ')}\n` +
      '(npm test installs them itself when it runs as root on Debian.)',
  );
  return 1;
}

process.exitCode = main();
