/**
 * Issue 13's last "Done when": the SFU (`node sfu/main.ts --config …`) and the bridge
 * (`node bridge/main.ts` with lk-jwt-service's variables) as real child processes. A real
 * @livekit/rtc-node publisher/subscriber pair, with tokens from the bridge's `/sfu/get`, talks in
 * one room; then for 20 s of warm-up and 30 s more a worker thread (test/support/flood-worker.ts) floods the same SFU with
 * junk signalling, junk UDP on every port of its rtc range from 127.0.0.9 (plaintext DTLS
 * alerts and records of unknown type among it) and oversized HTTP bodies to both processes.
 * The subscriber's audible frames per second in every 1 s window of the flood stay at or above
 * 90 % of the rate before it, no request hangs, and both processes are still up with their RSS
 * within 20 % of where it was after a warm-up. What the flood found gets its own quick test
 * after it (the SFU's Twirp waited for a declared over-limit body that never came).
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { connect } from 'node:net';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Worker } from 'node:worker_threads';
import { afterEach, describe, expect, it } from 'vitest';
import type { RemoteTrack } from '@livekit/rtc-node';
import { startFakeFederationServer } from '../fake-homeserver/federation.ts';
import { startFakeClientServerApi } from '../fake-homeserver/delayed-events.ts';
import { connectRtcNode, countAudibleFrames } from '../support/rtc-node.ts';
import { startTestSfu, suiteWorkerYaml, TEST_API_KEY, TEST_API_SECRET } from '../support/sfu-harness.ts';
import { freePort } from '../support/ports.ts';
import { SFU_NODE_FLAGS } from '../../sfu/node-flags.ts';
import { waitFor } from '../support/wait.ts';
import type { FloodMessage, FloodOptions, FloodReport } from '../support/flood-worker.ts';
import { liveKitRoomAlias } from '../../bridge/token/names.ts';

const root = fileURLToPath(new URL('../..', import.meta.url));
/** A range no other test uses, below the kernel's ephemeral range (32768–60999). */
const RANGE: [number, number] = [31400, 31429];
const FLOOD_MS = 30_000;
const WARMUP_MS = 20_000;
const BASELINE_WINDOWS = 5;
const AS_TOKEN = 'flood_as_token';
const HS_TOKEN = 'flood_hs_token';
const MATRIX_ROOM = '!flood:example.org';

/**
 * V8 grows a process's young generation (up to 2 × 64 MB on Node 24) when it allocates fast, and
 * keeps it: a one-time step of up to ~130 MB of RSS that V8 bounds whatever the input, and that
 * would swamp the 20 % budget below without saying anything about a leak. Both children run
 * with it capped as the SFU runs in production (sfu/node-flags.ts), so what the RSS comparison sees is what the input can grow: the old
 * generation, buffers, native memory and sockets. And both collect fully every second
 * (test/support/periodic-gc.ts): between two major collections the old generation fills with
 * promoted garbage (the SFU's heap in use climbed 51 → 95 MB over 40 s of flood before one ran),
 * which grew the RSS 26 % in one run and 1 % in the next, depending only on whether the
 * warm-up had already committed those pages.
 */
const V8_FLAGS = [...SFU_NODE_FLAGS, '--expose-gc', '--import=./test/support/periodic-gc.ts'];

const cleanups: (() => Promise<unknown>)[] = [];
afterEach(async () => {
  while (cleanups.length) await cleanups.pop()!().catch(() => undefined);
});

/** The V8 heap in use and the external (Buffer) memory of a process, from its /metrics. */
async function heapOf(url: string): Promise<{ used: number; external: number } | undefined> {
  const text = await fetch(`${url}/metrics`, { signal: AbortSignal.timeout(2000) })
    .then((r) => r.text())
    .catch(() => '');
  const value = (name: string) => Number(new RegExp(`^${name} (\\S+)$`, 'm').exec(text)?.[1] ?? Number.NaN);
  const used = value('nodejs_heap_size_used_bytes');
  return Number.isFinite(used) ? { used, external: value('nodejs_external_memory_bytes') } : undefined;
}

/** Resident set size of `pid` in bytes, from /proc/<pid>/status. */
function rssOf(pid: number): number {
  const kb = /^VmRSS:\s+(\d+) kB$/m.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
  if (!kb) throw new Error(`no VmRSS for ${pid}`);
  return Number(kb[1]) * 1024;
}

const mb = (n: number) => (n / 2 ** 20).toFixed(0);
const pct = (a: number, b: number) => `${(((b - a) / a) * 100).toFixed(1)}%`;

/**
 * The longest event-loop stall of a process since the previous call, in ms, from its /metrics
 * (prom-client resets its event-loop histogram on each scrape). For the summary line.
 */
async function eventLoopLagMaxMs(url: string): Promise<number> {
  const text = await (await fetch(`${url}/metrics`)).text();
  return Number(/^nodejs_eventloop_lag_max_seconds (\S+)$/m.exec(text)?.[1] ?? Number.NaN) * 1000;
}

function alive(child: ChildProcess): boolean {
  if (child.exitCode !== null || child.signalCode !== null || child.pid === undefined) return false;
  try {
    process.kill(child.pid, 0);
    return true;
  } catch {
    return false;
  }
}

/** Starts `node <args>` in the repository; the last 20 lines of its output are kept for failures. */
function spawnChild(name: string, args: string[], env: Record<string, string>): { child: ChildProcess; tail: () => string } {
  const clean = Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith('LIVEKIT_') && !k.startsWith('BRIDGE_')));
  const child = spawn(process.execPath, [...V8_FLAGS, ...args], { cwd: root, env: { ...clean, ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
  const lines: string[] = [];
  const keep = (d: Buffer) => {
    lines.push(...d.toString().split('\n').filter(Boolean));
    lines.splice(0, Math.max(0, lines.length - 20));
  };
  child.stdout!.on('data', keep);
  child.stderr!.on('data', keep);
  const exited = new Promise((r) => child.once('exit', r));
  cleanups.push(async () => {
    if (!alive(child)) return;
    child.kill('SIGTERM');
    const stopped = await Promise.race([exited.then(() => true), new Promise((r) => setTimeout(() => r(false), 10_000))]);
    if (!stopped) {
      child.kill('SIGKILL');
      await exited;
    }
  });
  return { child, tail: () => `${name}:\n${lines.join('\n')}` };
}

interface RunningFlood {
  /** The worker has loaded and starts sending. */
  ready: Promise<void>;
  /** The warm-up is over. */
  warm: Promise<void>;
  done: Promise<FloodReport>;
}

/** Starts the flood worker (test/support/flood-worker.ts); it is terminated by the cleanups. */
function runFlood(options: FloodOptions): RunningFlood {
  const worker = new Worker(new URL('../support/flood-worker.ts', import.meta.url), { workerData: options });
  cleanups.push(() => worker.terminate());
  const signal = (key: 'ready' | 'warm') =>
    new Promise<void>((resolve) => worker.on('message', (m: FloodMessage) => key in m && resolve()));
  const ready = signal('ready');
  const warm = signal('warm');
  const done = new Promise<FloodReport>((resolve, reject) => {
    worker.on('message', (m: FloodMessage) => 'report' in m && resolve(m.report));
    worker.once('error', reject);
    worker.once('exit', (code) => reject(new Error(`flood worker exited ${code} without a report`)));
  });
  return { ready, warm, done };
}

describe('SFU and bridge processes under a 30 s flood', () => {
  it('keeps a real pair’s audio at ≥ 90 % of its rate, both processes up and their memory within 20 %', { timeout: 150_000 }, async () => {
    const fed = await startFakeFederationServer();
    cleanups.push(() => fed.stop());
    const hs = await startFakeClientServerApi({ serverName: fed.serverName, asToken: AS_TOKEN });
    cleanups.push(() => hs.stop());
    const dir = mkdtempSync(join(tmpdir(), 'flood-'));
    cleanups.push(async () => rmSync(dir, { recursive: true, force: true }));

    const sfuPort = await freePort();
    const configFile = join(dir, 'sfu.yaml');
    writeFileSync(
      configFile,
      [
        `port: ${sfuPort}`,
        'bind_addresses: ["127.0.0.1"]',
        `keys:\n  ${TEST_API_KEY}: ${TEST_API_SECRET}`,
        `rtc:\n  node_ip: 127.0.0.1\n  port_range_start: ${RANGE[0]}\n  port_range_end: ${RANGE[1]}`,
        // The flood's clients run on the same two cores as the SFU: the CPU shedding would refuse
        // the pair's own joins on a busy machine, which is not what this test is about.
        'overload:\n  cpu_load_limit: 0',
        // signal_limits stay at their defaults (max_connections_per_ip 128): the flood keeps
        // fewer than that open at once, so its upgrades reach authentication and its frames the
        // parser instead of being refused at the door.
        'logging:\n  level: warn',
        ...suiteWorkerYaml(),
        '',
      ].join('\n'),
    );
    const sfu = spawnChild('sfu', ['sfu/main.ts', '--config', configFile], {});
    const sfuUrl = `http://127.0.0.1:${sfuPort}`;
    await waitFor('sfu listening', () => fetch(`${sfuUrl}/`).then((r) => r.ok, () => false), { timeoutMs: 20_000, intervalMs: 100 });

    const bridgePort = await freePort();
    const caFile = join(dir, 'federation-ca.pem');
    writeFileSync(caFile, fed.certPem);
    const bridge = spawnChild('bridge', ['bridge/main.ts'], {
      LIVEKIT_URL: `ws://127.0.0.1:${sfuPort}`,
      LIVEKIT_KEY: TEST_API_KEY,
      LIVEKIT_SECRET: TEST_API_SECRET,
      LIVEKIT_FULL_ACCESS_HOMESERVERS: fed.serverName,
      LIVEKIT_JWT_BIND: `127.0.0.1:${bridgePort}`,
      LIVEKIT_AS_TOKEN: AS_TOKEN,
      LIVEKIT_HS_TOKEN: HS_TOKEN,
      LIVEKIT_HS_SERVER_NAME: fed.serverName,
      LIVEKIT_CS_API_URL_OVERRIDES: `${fed.serverName}=${hs.url}`,
      // The fake homeserver's federation side is on 127.0.0.1, which the bridge refuses by default.
      BRIDGE_FEDERATION_ALLOW_PRIVATE_ADDRESSES: 'true',
      BRIDGE_RECONCILE_INTERVAL_SECONDS: '0',
      LIVEKIT_LOG_LEVEL: 'error',
      NODE_EXTRA_CA_CERTS: caFile,
    });
    const bridgeUrl = `http://127.0.0.1:${bridgePort}`;
    await waitFor('bridge healthy', () => fetch(`${bridgeUrl}/healthz`).then((r) => r.ok, () => false), { timeoutMs: 20_000, intervalMs: 100 });

    // The pair gets its tokens the way Element Call does: OpenID token -> bridge /sfu/get.
    const join_ = async (localpart: string) => {
      const userId = `@${localpart}:${fed.serverName}`;
      hs.setJoined(MATRIX_ROOM, userId, true);
      const openid = { access_token: fed.issueOpenIdToken(userId), token_type: 'Bearer', matrix_server_name: fed.serverName, expires_in: 3600 };
      const res = await fetch(`${bridgeUrl}/sfu/get`, {
        method: 'POST',
        headers: { 'Content-Type': 'application/json' },
        body: JSON.stringify({ room: MATRIX_ROOM, openid_token: openid, device_id: 'DEV' }),
      });
      const body = (await res.json()) as { url?: string; jwt?: string };
      expect(res.status, JSON.stringify(body)).toBe(200);
      const client = await connectRtcNode(body.url!, body.jwt!);
      cleanups.push(() => client.disconnect());
      return client;
    };
    const alice = await join_('alice');
    const bob = await join_('bob');
    const room = alice.room.name!;
    expect(room).toBe(liveKitRoomAlias(MATRIX_ROOM, 'm.call#ROOM'));
    const subscribed = bob.waitForEvent('trackSubscribed', (_t, _pub, p) => p.identity === alice.identity, 15_000);
    await alice.publishTone(440);
    const [track] = await subscribed;
    const frames = countAudibleFrames(track as RemoteTrack);
    cleanups.push(() => frames.stop());
    await waitFor('audible frames', () => frames.count > 100, { timeoutMs: 10_000 });

    /** Audible frames per second in each of the next `n` windows of about 1 s. */
    const rssSeries: { sfu: number; bridge: number }[] = [];
    const sfuHeap: { used: number; external: number }[] = [];
    const windows = async (n: number, until?: Promise<unknown>): Promise<number[]> => {
      const rates: number[] = [];
      let count = frames.count;
      let at = performance.now();
      const state = { over: false };
      void until?.finally(() => (state.over = true));
      while (rates.length < n && !state.over) {
        await new Promise((r) => setTimeout(r, 1000));
        const [c, t] = [frames.count, performance.now()];
        rates.push(((c - count) * 1000) / (t - at));
        if (until) {
          rssSeries.push({ sfu: rssOf(sfu.child.pid!), bridge: rssOf(bridge.child.pid!) });
          // What the SFU's V8 heap and its off-heap buffers hold, to tell a leak from allocator growth.
          void heapOf(sfuUrl).then((h) => h && sfuHeap.push(h));
        }
        [count, at] = [c, t];
      }
      return rates;
    };
    const baselineWindows = await windows(BASELINE_WINDOWS);
    const baseline = baselineWindows.reduce((a, b) => a + b, 0) / baselineWindows.length;
    expect(baseline).toBeGreaterThan(80); // 100 frames of 10 ms a second, less jitter

    const pids = { sfu: sfu.child.pid!, bridge: bridge.child.pid! };
    // The flood's first WARMUP_MS are a warm-up, so that the memory compared below is each
    // process's working set under this load rather than its idle size: reading large bodies and
    // frames raises the allocator’s high-water mark by 50–80 MB in each process within 8–20 s,
    // after which it stays flat (measured part by part; the V8 heap in use does not grow). What
    // must not happen is growth while the flood goes on. The warm-up's frame windows count too.
    const flood = runFlood({
      sfuPort,
      range: RANGE,
      bridgePort,
      hsToken: HS_TOKEN,
      apiKey: TEST_API_KEY,
      apiSecret: TEST_API_SECRET,
      room,
      durationMs: WARMUP_MS + FLOOD_MS,
      warmUpMs: WARMUP_MS,
      udpIntervalMs: 50,
    });
    await flood.ready;
    let rssStart = { sfu: 0, bridge: 0 };
    void flood.warm.then(async () => {
      rssStart = { sfu: rssOf(pids.sfu), bridge: rssOf(pids.bridge) };
      await Promise.all([eventLoopLagMaxMs(sfuUrl), eventLoopLagMaxMs(bridgeUrl)]).catch(() => undefined);
    });
    const during = await windows((WARMUP_MS + FLOOD_MS) / 1000, flood.done);
    const report = await flood.done;
    expect(rssStart.sfu).toBeGreaterThan(0);
    const rssEnd = { sfu: rssOf(pids.sfu), bridge: rssOf(pids.bridge) };
    const up = { sfu: alive(sfu.child), bridge: alive(bridge.child) };
    const lag = up.sfu && up.bridge ? await Promise.all([eventLoopLagMaxMs(sfuUrl), eventLoopLagMaxMs(bridgeUrl)]) : [Number.NaN, Number.NaN];

    const minRate = Math.min(...during);
    const httpOutcomes = Object.entries(report.http)
      .map(([t, o]) => `${t}: ${Object.entries(o).map(([k, v]) => `${k}×${v}`).join(' ')}`)
      .join('; ');
    console.log(
      `flood: ${(WARMUP_MS + FLOOD_MS) / 1000} s (RSS from ${WARMUP_MS / 1000} s on); baseline ${baseline.toFixed(1)} frames/s, min 1 s window during ${minRate.toFixed(1)} (${((minRate / baseline) * 100).toFixed(1)}%) over ${during.length} windows; ` +
        `sfu RSS ${mb(rssStart.sfu)}→${mb(rssEnd.sfu)} MB (${pct(rssStart.sfu, rssEnd.sfu)}), bridge RSS ${mb(rssStart.bridge)}→${mb(rssEnd.bridge)} MB (${pct(rssStart.bridge, rssEnd.bridge)}); ` +
        `longest event-loop stall after the warm-up: sfu ${lag[0]!.toFixed(0)} ms, bridge ${lag[1]!.toFixed(0)} ms; ` +
        `udp sent ${report.udpSent} received ${report.udpReceived}; bad upgrades ${JSON.stringify(report.badUpgrades)}; ` +
        `junk sessions ${JSON.stringify(report.junkSessions)}; http ${httpOutcomes}`,
    );
    console.log(`flood: windows ${during.map((r) => r.toFixed(0)).join(' ')}`);
    console.log(`flood: sfu RSS MB ${rssSeries.map((r) => mb(r.sfu)).join(' ')}; bridge ${rssSeries.map((r) => mb(r.bridge)).join(' ')}`);
    console.log(`flood: sfu V8 heap used MB ${sfuHeap.map((h) => mb(h.used)).join(' ')}; external ${sfuHeap.map((h) => mb(h.external)).join(' ')}`);

    const diagnostics = `${sfu.tail()}\n${bridge.tail()}`;
    expect(up, diagnostics).toEqual({ sfu: true, bridge: true });
    expect(during.length).toBeGreaterThanOrEqual((WARMUP_MS + FLOOD_MS) / 1000 - 3);
    expect(minRate, `windows ${during.map((r) => r.toFixed(0)).join(' ')}`).toBeGreaterThanOrEqual(0.9 * baseline);
    expect(Math.abs(rssEnd.sfu - rssStart.sfu) / rssStart.sfu, diagnostics).toBeLessThanOrEqual(0.2);
    expect(Math.abs(rssEnd.bridge - rssStart.bridge) / rssStart.bridge, diagnostics).toBeLessThanOrEqual(0.2);

    // The flood was a flood, and nothing in it hung or was let in.
    expect(report.udpSent).toBeGreaterThan(100_000);
    // Not asserted: report.udpReceived (logged above) is a few STUN answers to 127.0.0.9 from
    // the junk sessions' new peer connections, whose sockets take datagrams from their bind
    // until the guard is installed after gathering (sfu/media/transport.ts `secure`). The
    // established pair's sockets answer nothing (sfu-media-port-guard.test.ts asserts 0).
    expect(report.badUpgrades).not.toHaveProperty('accepted');
    expect(report.badUpgrades).not.toHaveProperty('hang');
    expect(report.badUpgrades['401']).toBeGreaterThan(100);
    expect(report.junkSessions.opened).toBeGreaterThan(10);
    expect(report.junkSessions.notClosed).toBe(0);
    expect(report.junkSessions.closedBySfu).toBe(report.junkSessions.opened);
    const allowed: Record<string, string[]> = {
      'bridge /sfu/get (Content-Length)': ['413', 'closed'],
      'bridge /get_token (chunked)': ['413', 'closed'],
      'bridge /sfu_webhook (Content-Length)': ['413', 'closed'],
      'bridge /sfu_webhook (chunked)': ['401', '413', 'closed'],
      'bridge appservice transaction (Content-Length)': ['413', 'closed'],
      'bridge appservice transaction (no hs_token)': ['401', 'closed'],
      // Twirp answers a body over its 1 MiB limit `malformed` (400), a declared one before
      // reading it; a request without a token has no grants, which is checked after the body.
      'sfu Twirp ListRooms (authorized)': ['400', 'closed'],
      'sfu Twirp ListRooms (no token)': ['400', 'closed'],
      'sfu /rtc (100 KB query)': ['431', 'closed'],
    };
    expect(Object.keys(report.http).toSorted()).toEqual(Object.keys(allowed).toSorted());
    for (const [target, outcomes] of Object.entries(report.http)) {
      for (const outcome of Object.keys(outcomes)) expect(allowed[target], `${target}: ${outcome}`).toContain(outcome);
    }
  });
});

describe('what the flood found', () => {
  it('answers a RoomService request declaring a body over the limit at once and closes it, token or not, instead of waiting for the body', async () => {
    const sfu = await startTestSfu();
    cleanups.push(() => sfu.stop());
    const admin = await sfu.token('admin', { roomList: true });
    for (const auth of [`Authorization: Bearer ${admin}\r\n`, '']) {
      const socket = connect(Number(new URL(sfu.url).port), '127.0.0.1');
      cleanups.push(async () => socket.destroy());
      let text = '';
      let closed = false;
      socket.on('data', (d: Buffer) => (text += d.toString('latin1')));
      socket.on('close', () => (closed = true));
      socket.on('error', () => undefined);
      await new Promise<void>((resolve) => socket.once('connect', () => resolve()));
      socket.write(
        `POST /twirp/livekit.RoomService/ListRooms HTTP/1.1\r\nHost: sfu\r\nContent-Type: application/json\r\n${auth}Content-Length: ${8 << 20}\r\n\r\n`,
      );
      socket.write(Buffer.alloc(64 * 1024, 0x20)); // the rest never comes
      await waitFor('the answer and the close', () => closed && text.length > 0, { timeoutMs: 3_000 });
      expect(text).toMatch(/^HTTP\/1\.1 400 /);
      expect(text.toLowerCase()).toContain('connection: close');
      expect(text).toContain('"code":"malformed"');
    }
  });
});
