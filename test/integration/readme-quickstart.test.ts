/**
 * The README's quick start runs as written. Its commands are read from the README itself:
 * `npm start` is run exactly like that, in the repository, on its default ports (7880 and 8080,
 * which must be free: the test says so rather than picking others), until /healthz answers on
 * both and the URLs the README promises are printed, then stopped with SIGTERM. `npm test` is
 * not run from inside the test suite (it would recurse); instead it must be the test script in
 * package.json and the command CI runs after `npm ci` (.ci/run), which the README also names.
 * Then "With a local Synapse on plain HTTP", also literally: its registration command writes
 * matrix-rtc-registration.yaml into the repository (removed afterwards), the fake homeserver
 * stands in for the Synapse of its `homeserver.yaml` (that registration, the listener's
 * 127.0.0.1:8008, `server_name: localhost`), its `npm start` line runs with its variables, and two
 * users of that homeserver make a call as Element Call does on Synapse 1.132 (matrix-js-sdk's
 * MembershipManager writing the call.member state and delayed leave, OpenID tokens, `/sfu/get`
 * with Element Call's bodies) and hear each other through the LiveKit URL it answered. Both
 * use the default ports, so they run one after the other in this file.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, readFileSync, rmSync } from 'node:fs';
import { createServer } from 'node:net';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { RemoteTrack } from '@livekit/rtc-node';
import type { MatrixClient } from 'matrix-js-sdk';
import { MembershipManager } from 'matrix-js-sdk/lib/matrixrtc/MembershipManager.js';
import { parse as parseYaml } from 'yaml';
import { afterAll, afterEach, describe, expect, it } from 'vitest';
import { embeddedBridgeEnv } from '../../embedded/embedded.ts';
import { startFakeHomeserver, type FakeHomeserver } from '../fake-homeserver/server.ts';
import { matrixClientFor, quietLogger } from '../support/matrixrtc-sticky.ts';
import { connectRtcNode, dominantFrequency, rms, SAMPLE_RATE, type RtcNodeClient } from '../support/rtc-node.ts';
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

/** The contents of the ```lang blocks in a piece of Markdown, de-indented (blocks inside list items). */
function codeBlocks(markdown: string, lang: string): string[] {
  return [...markdown.matchAll(new RegExp('^( *)```' + lang + '\\n([\\s\\S]*?)^ *```', 'gm'))].map((m) =>
    (m[2] ?? '').split('\n').map((l) => l.slice(Math.min(m[1]!.length, l.length - l.trimStart().length))).join('\n'),
  );
}

/** Command lines of the ```sh blocks in a piece of Markdown. */
function shellCommands(markdown: string): string[] {
  return codeBlocks(markdown, 'sh').flatMap((b) => b.split('\n').map((l) => l.trim()).filter((l) => l && !l.startsWith('#')));
}

/** A command line as a shell runs it: leading `NAME=value` assignments, then the words (split on spaces). */
function commandLine(line: string): { env: Record<string, string>; program: string; args: string[] } {
  const words = line.split(' ').filter(Boolean);
  const env: Record<string, string> = {};
  while (words[0] && /^[A-Z_][A-Z0-9_]*=/.test(words[0])) {
    const w = words.shift()!;
    env[w.slice(0, w.indexOf('='))] = w.slice(w.indexOf('=') + 1);
  }
  const [program = '', ...args] = words;
  return { env, program, args };
}

/** This test process's environment without our own settings, as on a fresh machine. */
function freshEnv(): Record<string, string | undefined> {
  return Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith('LIVEKIT_') && !k.startsWith('BRIDGE_')));
}

async function assertPortFree(port: number, whose = "the README's `npm start` uses it by default"): Promise<void> {
  await new Promise<void>((resolve, reject) => {
    const srv = createServer();
    srv.once('error', (err: NodeJS.ErrnoException) =>
      reject(
        new Error(
          `port ${port} on 127.0.0.1 is busy (${err.code}): ${whose}. ` +
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

/**
 * A command line run in the repository in its own process group (npm, its shell, Node), with
 * its output kept; `stop()` sends the group SIGTERM, as a terminal's Ctrl-C would, and answers
 * how it ended (undefined when it had already ended).
 */
interface Running {
  proc: ChildProcess;
  output(): string;
  exited: Promise<string>;
  stop(): Promise<string | undefined>;
}

function runInRepo(line: string): Running {
  const { env, program, args } = commandLine(line);
  // As written: no shell of our own (npm brings its own).
  const proc = spawn(program, args, { cwd: root, env: { ...freshEnv(), ...env }, detached: true, stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  proc.stdout?.on('data', (d: Buffer) => (out += d.toString()));
  proc.stderr?.on('data', (d: Buffer) => (out += d.toString()));
  const exited = new Promise<string>((resolve) => proc.once('exit', (code, signal) => resolve(signal ?? `code ${code}`)));
  return {
    proc,
    output: () => out,
    exited,
    async stop() {
      if (!proc.pid || !groupAlive(proc.pid)) return undefined;
      process.kill(-proc.pid, 'SIGTERM');
      return await exited;
    },
  };
}

/** Waits for /healthz on the SFU (7880) and the bridge (8080) of `npm start`. */
async function healthy(run: Running): Promise<void> {
  await waitFor(
    'npm start to answer /healthz on 7880 and 8080',
    async () => {
      if (run.proc.exitCode !== null) throw new Error(`npm start exited with ${run.proc.exitCode}:\n${run.output()}`);
      const [a, b] = await Promise.all([
        fetch('http://127.0.0.1:7880/healthz').then((r) => r.status, () => 0),
        fetch('http://127.0.0.1:8080/healthz').then((r) => r.status, () => 0),
      ]);
      return a === 200 && b === 200;
    },
    { timeoutMs: 40_000, intervalMs: 100 },
  );
}

/** SIGTERM, then every process of the group gone and both default ports free again. */
async function stopNpmStart(run: Running): Promise<void> {
  // npm re-raises the signal its script died of; a clean exit is fine too.
  expect(['SIGTERM', 'code 0']).toContain(await run.stop());
  const pid = run.proc.pid ?? 0;
  await waitFor('npm start\'s processes to exit', () => !groupAlive(pid), { timeoutMs: 10_000 });
  await assertPortFree(7880);
  await assertPortFree(8080);
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
    let run: Running | undefined;
    afterAll(async () => {
      await run?.stop();
    });

    it('serves /healthz on 7880 and 8080 and /metrics, prints the README\'s URLs, and stops on SIGTERM', async () => {
      for (const url of ['ws://127.0.0.1:7880', 'http://127.0.0.1:8080', '.data/dev-keys.yaml']) {
        expect(quickStart, `README quick start mentions ${url}`).toContain(url);
      }
      await assertPortFree(7880);
      await assertPortFree(8080);
      run = runInRepo(commands[0] ?? '');
      await healthy(run);
      const metrics = await fetch('http://127.0.0.1:8080/metrics');
      expect(metrics.status).toBe(200);
      expect(await metrics.text()).toMatch(/^# HELP /m);
      const out = run.output;
      await waitFor('the printed URLs', () => out().includes('ws://127.0.0.1:7880') && out().includes('http://127.0.0.1:8080/healthz'));
      expect(out()).toContain('dev-keys.yaml');
      // Without a registration the appservice is off, and nothing says otherwise.
      expect(out()).not.toContain('Appservice');
      await stopNpmStart(run);
    });
  });
});

// ---------------------------------------------------------------------------------------------
// "With a local Synapse on plain HTTP", followed literally against the fake homeserver.

const localSynapse = section('With a local Synapse on plain HTTP');
const localCommands = shellCommands(localSynapse);
const CALL_MEMBER = 'org.matrix.msc3401.call.member';

interface HomeserverYaml {
  app_service_config_files: string[];
  max_event_delay_duration: string;
  matrix_rtc: { transports: { type: string; livekit_service_url: string }[] };
  listeners: { port: number; bind_addresses: string[]; type: string; resources: { names: string[] }[] }[];
}

/** The body keys of Element Call's `/sfu/get` after it wrote its delayed leave (the recording's). */
function recordedSfuGetKeys(): string[] {
  const file = fileURLToPath(new URL('../../../shared/fixtures/element-call/token-service-requests.md', import.meta.url));
  const bodies = [...readFileSync(file, 'utf8').matchAll(/^### \w+ POST \S*\/sfu\/get.*\n```json\n([\s\S]*?)\n```/gm)].map(
    (m) => JSON.parse(m[1]!) as Record<string, unknown>,
  );
  const withDelay = bodies.find((b) => b.delay_id !== undefined);
  if (!withDelay) throw new Error('the recording has no /sfu/get with delay_id');
  return Object.keys(withDelay).toSorted();
}

/** One Element Call user on Synapse 1.132: its MatrixClient and js-sdk's (state-event) MembershipManager. */
interface CallUser {
  userId: string;
  deviceId: string;
  client: MatrixClient;
  manager?: MembershipManager;
  /** delay_id of the delayed `{}` leave the manager scheduled. */
  delayIds: string[];
}

function callUser(hsUrl: string, user: { userId: string; accessToken: string }, deviceId: string): CallUser {
  const client = matrixClientFor(hsUrl, user.userId, deviceId, user.accessToken);
  const u: CallUser = { userId: user.userId, deviceId, client, delayIds: [] };
  // The manager keeps the delay id to itself; Element Call's /sfu/get sends it, so note it here.
  const send = client._unstable_sendDelayedStateEvent.bind(client);
  client._unstable_sendDelayedStateEvent = async (...a: Parameters<typeof send>) => {
    const r = await send(...a);
    u.delayIds.push(r.delay_id);
    return r;
  };
  return u;
}

describe('README: with a local Synapse on plain HTTP', () => {
  const regFile = join(root, 'matrix-rtc-registration.yaml');
  let wroteRegistration = false;
  let hs: FakeHomeserver | undefined;
  let registering: Running | undefined;
  let run: Running | undefined;
  const users: CallUser[] = [];
  const rtc: RtcNodeClient[] = [];
  afterEach(async () => {
    for (const c of rtc.splice(0)) await c.disconnect();
    for (const u of users.splice(0)) {
      if (u.manager?.isActivated()) await u.manager.leave(2_000).catch(() => false);
      u.client.stopClient();
    }
    await registering?.stop();
    await run?.stop();
    await hs?.stop();
    if (wroteRegistration) rmSync(regFile, { force: true });
  });

  it('is the registration command, then `npm start` with the registration and the homeserver URL', () => {
    expect(localCommands).toHaveLength(2);
    expect(localCommands[0]).toMatch(/^npm run bridge:registration -- /);
    expect(commandLine(localCommands[1]!)).toMatchObject({ program: 'npm', args: ['start'] });
    const ignored = readFileSync(join(root, '.gitignore'), 'utf8').split('\n');
    expect(ignored, 'the registration the README writes into the clone is not committed by accident').toContain('matrix-rtc-registration.yaml');
  });

  it("`npm start` hands the README's variables to its bridge and names the LIVEKIT_* it does not take", () => {
    const { env } = commandLine(localCommands[1]!);
    const picked = embeddedBridgeEnv({ ...env, BRIDGE_LEAVE_GRACE_SECONDS: '5', LIVEKIT_URL: 'wss://x', LIVEKIT_REDIS_URL: 'redis://x', LIVEKIT_LOG_LEVEL: 'debug', PATH: '/bin' });
    expect(picked).toEqual({ env: { ...env, BRIDGE_LEAVE_GRACE_SECONDS: '5' }, ignored: ['LIVEKIT_REDIS_URL', 'LIVEKIT_URL'] });
  });

  it('run as written against a homeserver on 127.0.0.1:8008, gives two users a call in which they hear each other', async () => {
    const t0 = Date.now();
    // What the README tells Synapse: the registration file, its plain-HTTP listener, the service URL.
    const [hsYamlText] = codeBlocks(localSynapse, 'yaml');
    const hsYaml = parseYaml(hsYamlText ?? '') as HomeserverYaml;
    const listener = hsYaml.listeners[0]!;
    expect(listener).toMatchObject({ type: 'http', bind_addresses: ['127.0.0.1'] });
    expect(listener.resources[0]!.names).toEqual(expect.arrayContaining(['client', 'federation']));
    const hsUrl = `http://${listener.bind_addresses[0]}:${listener.port}`;
    expect(hsUrl).toBe('http://127.0.0.1:8008');
    expect(localSynapse).toContain('`server_name: localhost`');
    const serviceUrl = hsYaml.matrix_rtc.transports[0]!.livekit_service_url;
    expect(hsYaml.max_event_delay_duration).toBe('24h');

    const register = commandLine(localCommands[0]!);
    const opt = (name: string) => register.args[register.args.indexOf(name) + 1];
    expect(opt('--server-name')).toBe('localhost');
    expect(hsYaml.app_service_config_files[0]!.split('/').at(-1)).toBe(opt('--out'));
    const start = commandLine(localCommands[1]!);
    expect(start.env).toEqual({
      LIVEKIT_AS_REGISTRATION_FILE: opt('--out'),
      LIVEKIT_HS_SERVER_NAME: 'localhost',
      LIVEKIT_CS_API_URL_OVERRIDES: `localhost=${hsUrl}`,
    });

    // 1. The registration, written into the clone (never over a file of the reader's own).
    if (existsSync(regFile)) throw new Error(`${regFile} exists: move it away (this test writes and then removes it)`);
    await assertPortFree(listener.port, "the README's homeserver listens there (a Synapse of your own?)");
    await assertPortFree(7880);
    await assertPortFree(8080);
    registering = runInRepo(localCommands[0]!);
    wroteRegistration = true;
    expect(await registering.exited, registering.output()).toBe('code 0');
    const registration = parseYaml(readFileSync(regFile, 'utf8')) as Parameters<typeof startFakeHomeserver>[0]['registration'];
    expect(registration.url).toBe(opt('--url'));

    // 2. "Synapse" with that registration on 127.0.0.1:8008, server_name localhost.
    hs = await startFakeHomeserver({ registration, serverName: 'localhost', port: listener.port });
    expect(hs.url).toBe(hsUrl);
    const tHs = Date.now();

    // 3. npm start with the README's variables.
    run = runInRepo(localCommands[1]!);
    await healthy(run);
    const out = run.output;
    const logLine = (msg: string | RegExp) =>
      out()
        .split('\n')
        .filter((l) => l.startsWith('{'))
        .map((l) => JSON.parse(l) as Record<string, unknown>)
        .find((l) => typeof l.msg === 'string' && (typeof msg === 'string' ? l.msg === msg : msg.test(l.msg)));
    await waitFor('the homeserver ping in the start-up log', () => logLine('homeserver reached us through the appservice ping'), { timeoutMs: 10_000 });
    expect(logLine(/^membership check on/), out()).toBeDefined();
    expect(logLine('homeserver client-server API')).toMatchObject({ url: hsUrl, from: 'LIVEKIT_CS_API_URL_OVERRIDES', serverName: 'localhost' });
    await waitFor('the printed summary', () => out().includes('Ctrl-C stops.'), { timeoutMs: 10_000 });
    expect(out()).toMatch(/Appservice +on: membership check, registration matrix-rtc-registration\.yaml/);
    expect(out()).toContain(`client-server API ${hsUrl} (from LIVEKIT_CS_API_URL_OVERRIDES)`);
    const tStarted = Date.now();

    // 4. Two users of the homeserver in a room, as Element Call on Synapse 1.132 makes one.
    const alice = callUser(hsUrl, hs.model.registerUser('alice'), 'ALICEDEVICE');
    const bob = callUser(hsUrl, hs.model.registerUser('bob'), 'BOBDEVICE');
    users.push(alice, bob);
    const { room_id: roomId } = await alice.client.createRoom({
      room_version: '10',
      invite: [bob.userId],
      power_level_content_override: { events: { [CALL_MEMBER]: 0 } },
    });
    await bob.client.joinRoom(roomId);

    const sfuGet = async (body: Record<string, unknown>) => {
      const res = await fetch(`${serviceUrl}/sfu/get`, { method: 'POST', headers: { 'Content-Type': 'application/json' }, body: JSON.stringify(body) });
      return { status: res.status, json: (await res.json()) as { url?: string; jwt?: string } };
    };
    const expectedKeys = recordedSfuGetKeys();
    const joined: { user: CallUser; url: string; jwt: string }[] = [];
    for (const u of [alice, bob]) {
      // Element Call: /sfu/get, its delayed leave and call.member state, then /sfu/get with the delay.
      const openid = await u.client.getOpenIdToken();
      expect(openid.matrix_server_name).toBe('localhost');
      const first = await sfuGet({ room: roomId, openid_token: openid, device_id: u.deviceId });
      expect(first.status, JSON.stringify(first.json)).toBe(200);
      u.manager = new MembershipManager({ delayedLeaveEventDelayMs: 18_000 }, { roomId, getVersion: () => '10' }, u.client, { application: 'm.call', id: 'ROOM' }, quietLogger);
      u.manager.join([], { type: 'livekit', livekit_service_url: serviceUrl, livekit_alias: roomId } as never);
      const stateKey = `_${u.userId}_${u.deviceId}_m.call`;
      await waitFor(`${u.userId}'s call membership`, () => hs!.model.stateEvent(roomId, CALL_MEMBER, stateKey)?.content.device_id === u.deviceId, { timeoutMs: 10_000 });
      expect(u.delayIds).toHaveLength(1);
      const body = { room: roomId, openid_token: await u.client.getOpenIdToken(), device_id: u.deviceId, delay_id: u.delayIds[0], delay_timeout: 18_000, delay_cs_api_url: hsUrl };
      expect(Object.keys(body).toSorted()).toEqual(expectedKeys);
      const second = await sfuGet(body);
      expect(second.status, JSON.stringify(second.json)).toBe(200);
      expect(second.json.url).toBe('ws://127.0.0.1:7880');
      joined.push({ user: u, url: second.json.url!, jwt: second.json.jwt! });
    }
    // The check is real: a user of the homeserver outside the room gets no token.
    const eve = callUser(hsUrl, hs.model.registerUser('eve'), 'EVEDEVICE');
    users.push(eve);
    const denied = await sfuGet({ room: roomId, openid_token: await eve.client.getOpenIdToken(), device_id: eve.deviceId });
    expect(denied).toEqual({ status: 403, json: { errcode: 'M_FORBIDDEN', error: 'The requesting user is not a member of the room' } });
    // The homeserver reached the bridge at the registration's url with the room's events.
    await waitFor('the call memberships pushed to the bridge', () => hs!.pusher.pendingCount() === 0 && hs!.pusher.attempts.some((t) => t.ok));
    const tTokens = Date.now();

    // 5. Both join the LiveKit URL they were given and hear each other's tone.
    const [a, b] = [await connectRtcNode(joined[0]!.url, joined[0]!.jwt), await connectRtcNode(joined[1]!.url, joined[1]!.jwt)];
    rtc.push(a, b);
    expect(a.room.name).toBe(b.room.name);
    const aHearsB = a.waitForEvent('trackSubscribed', (_t, _p, p) => p.identity === b.identity, 15_000);
    const bHearsA = b.waitForEvent('trackSubscribed', (_t, _p, p) => p.identity === a.identity, 15_000);
    await a.publishTone(440);
    await b.publishTone(660);
    const [[trackOfB], [trackOfA]] = await Promise.all([aHearsB, bHearsA]);
    const [atA, atB] = await Promise.all([a.collectAudio(trackOfB as RemoteTrack, SAMPLE_RATE * 1.5), b.collectAudio(trackOfA as RemoteTrack, SAMPLE_RATE * 1.5)]);
    // Skip the first half second (jitter buffer warm-up), then analyse one second.
    for (const [samples, hz] of [[atA.subarray(SAMPLE_RATE / 2), 660], [atB.subarray(SAMPLE_RATE / 2), 440]] as const) {
      expect(rms(samples)).toBeGreaterThan(1000);
      expect(Math.abs(dominantFrequency(samples, 100, 2000) - hz)).toBeLessThanOrEqual(5);
    }
    const tHeard = Date.now();
    console.log(
      `README local-Synapse steps: registration + homeserver ${tHs - t0} ms, npm start healthy with the ping ${tStarted - tHs} ms, ` +
        `room + memberships + tokens ${tTokens - tStarted} ms, joined and heard each other ${tHeard - tTokens} ms`,
    );

    // Hanging up, then Ctrl-C: everything stops, the ports are free again.
    for (const c of rtc.splice(0)) await c.disconnect();
    for (const u of [alice, bob]) expect(await u.manager!.leave(5_000)).toBe(true);
    await stopNpmStart(run);
  }, 120_000);
});
