/**
 * Issue 6's crash case with real processes: `node bridge/main.ts` (Redis store on a real
 * redis-server) receives a transaction and, while it is still applying it (its RoomService call
 * to our SFU is held by a loopback proxy), is killed with SIGKILL. A new bridge process starts
 * on the same Redis; the fake homeserver retries the transaction (Synapse's recoverer, forced
 * by the new bridge's start-up ping) and the SFU ends in the right state: the participant whose
 * leave was in flight is removed (PARTICIPANT_REMOVED at its rtc-node client), the room of a
 * call whose join was in flight exists.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterEach, describe, expect, it } from 'vitest';
import { DisconnectReason } from '@livekit/rtc-node';
import { RoomServiceClient } from 'livekit-server-sdk';
import { legacyLiveKitIdentity, liveKitRoomAlias } from '../../bridge/token/names.ts';
import { startFakeHomeserver, testRegistration, type FakeHomeserver } from '../fake-homeserver/server.ts';
import { startHoldingProxy } from '../support/holding-proxy.ts';
import { freePort } from '../support/ports.ts';
import { startRedisServer } from '../support/redis-server.ts';
import { connectRtcNode } from '../support/rtc-node.ts';
import { startTestSfu, TEST_API_KEY, TEST_API_SECRET } from '../support/sfu-harness.ts';
import { waitFor } from '../support/wait.ts';
import { CALL, joinContent, seedUsers, SLOT, stateKeyOf } from './bridge-e2e-world.ts';

const root = fileURLToPath(new URL('../..', import.meta.url));
const cleanups: (() => Promise<unknown>)[] = [];
afterEach(async () => {
  while (cleanups.length) await cleanups.pop()!().catch(() => undefined);
});

function spawnBridge(env: Record<string, string>): ChildProcess {
  const clean = Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith('LIVEKIT_') && !k.startsWith('BRIDGE_')));
  const child = spawn(process.execPath, ['bridge/main.ts'], { cwd: root, env: { ...clean, ...env }, stdio: ['ignore', 'ignore', 'pipe'] });
  let stderr = '';
  child.stderr!.on('data', (c: Buffer) => (stderr += c.toString()));
  child.on('exit', (code, signal) => {
    if (code !== 0 && signal !== 'SIGKILL' && signal !== 'SIGTERM' && stderr) console.error(`bridge exited ${code ?? signal}: ${stderr}`);
  });
  cleanups.push(async () => {
    if (child.exitCode === null && child.signalCode === null) {
      const exited = new Promise((r) => child.once('exit', r));
      child.kill('SIGTERM');
      await exited;
    }
  });
  return child;
}

async function killHard(child: ChildProcess): Promise<void> {
  const exited = new Promise((r) => child.once('exit', r));
  child.kill('SIGKILL');
  await exited;
}

describe('bridge process killed mid-transaction', () => {
  it('ends, after the homeserver`s retry, in the right state (leave in flight: participant removed; join in flight: room exists)', async () => {
    const redis = await startRedisServer();
    cleanups.push(() => redis.stop());
    const sfu = await startTestSfu({ room: { auto_create: false } });
    cleanups.push(() => sfu.stop());
    const proxy = await startHoldingProxy(sfu.url);
    cleanups.push(() => proxy.stop());
    const port = await freePort();
    const bridgeUrl = `http://127.0.0.1:${port}`;
    const reg = testRegistration(bridgeUrl);
    const hs: FakeHomeserver = await startFakeHomeserver({ registration: reg, backoffBaseMs: 100 });
    cleanups.push(() => hs.stop());
    const dir = mkdtempSync(join(tmpdir(), 'bridge-crash-'));
    cleanups.push(async () => rmSync(dir, { recursive: true, force: true }));
    writeFileSync(join(dir, 'registration.yaml'), JSON.stringify(reg));
    const env = {
      LIVEKIT_URL: proxy.url,
      LIVEKIT_KEY: TEST_API_KEY,
      LIVEKIT_SECRET: TEST_API_SECRET,
      LIVEKIT_FULL_ACCESS_HOMESERVERS: 'localhost',
      LIVEKIT_JWT_BIND: `127.0.0.1:${port}`,
      LIVEKIT_AS_REGISTRATION_FILE: join(dir, 'registration.yaml'),
      LIVEKIT_HS_SERVER_NAME: 'localhost',
      BRIDGE_HOMESERVER_URL: hs.url,
      LIVEKIT_REDIS_URL: redis.url,
      BRIDGE_RECONCILE_INTERVAL_SECONDS: '0',
      // The leave's RemoveParticipant is what is in flight here (the graced leave: bridge-appservice).
      BRIDGE_LEAVE_GRACE_SECONDS: '0',
      LIVEKIT_LOG_LEVEL: 'error',
    };
    const healthy = () => waitFor('bridge healthy', async () => (await fetch(`${bridgeUrl}/healthz`).catch(() => undefined))?.ok, { timeoutMs: 20_000 });
    const rooms = new RoomServiceClient(sfu.url, TEST_API_KEY, TEST_API_SECRET);
    const roomNames = async () => (await rooms.listRooms()).map((r) => r.name);
    const pushedOk = (eventId: string) => hs.pusher.attempts.some((a) => a.ok && a.eventIds.includes(eventId));

    const { alice, bob, makeRoom } = seedUsers(hs.model);
    const roomA = makeRoom();
    const roomB = makeRoom();
    const sfuRoomA = liveKitRoomAlias(roomA, SLOT);
    const sfuRoomB = liveKitRoomAlias(roomB, SLOT);

    let bridge = spawnBridge(env);
    await healthy();
    const joinA = hs.model.sendState(alice, roomA, CALL, stateKeyOf(alice, 'DEVICEA'), joinContent('DEVICEA', alice));
    await waitFor('alice`s join delivered', () => pushedOk(joinA));
    expect(await roomNames()).toContain(sfuRoomA);
    const identity = legacyLiveKitIdentity(alice, 'DEVICEA');
    const client = await connectRtcNode(sfu.wsUrl, await sfu.token(identity, { roomJoin: true, room: sfuRoomA }));
    cleanups.push(() => client.disconnect());
    const removed = client.waitForEvent('disconnected', undefined, 60_000);

    // One transaction carries alice's leave in A and bob's join in B; the bridge is killed while
    // its first SFU call for it is held.
    proxy.hold(/RemoveParticipant|CreateRoom/);
    const leaveA = hs.model.sendState(alice, roomA, CALL, stateKeyOf(alice, 'DEVICEA'), {});
    const joinB = hs.model.sendState(bob, roomB, CALL, stateKeyOf(bob, 'DEVICEB'), joinContent('DEVICEB', bob));
    await waitFor('the bridge is inside the transaction', () => proxy.held().length > 0);
    await killHard(bridge);
    proxy.dropHeld();
    proxy.passThrough();
    expect(pushedOk(leaveA)).toBe(false);
    await waitFor('the homeserver saw the failure', () => hs.pusher.isDown());
    expect((await rooms.listParticipants(sfuRoomA)).map((p) => p.identity)).toContain(identity);

    bridge = spawnBridge(env);
    await healthy();
    await waitFor('the retried transaction answered by the new bridge', () => pushedOk(leaveA) && pushedOk(joinB), { timeoutMs: 30_000 });
    const [reason] = await removed;
    expect(reason).toBe(DisconnectReason.PARTICIPANT_REMOVED);
    expect((await rooms.listParticipants(sfuRoomA)).map((p) => p.identity)).not.toContain(identity);
    expect(await roomNames()).toContain(sfuRoomB);
    expect(hs.pusher.isDown()).toBe(false);
  });
});
