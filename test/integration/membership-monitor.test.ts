/**
 * The membership monitor (bridge/token/membership-monitor.ts) on a manual clock, named after
 * lk-jwt-service's `membership_monitor.rs` unit tests (matrixrtc-auth-service.md §17), with the
 * in-memory and the Redis store (a real redis-server), the real homeserver client against the
 * composed fake homeserver (Synapse's `joined_members` rule for appservices: 403 when no user the
 * registration covers is joined; MSC4502 `is_joined`), which pushes nothing (registration url
 * null), and a recording SFU. Sweeps are called directly, or by advancing the clock.
 */
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { Redis } from 'ioredis';
import { createManualClock, type ManualClock } from '../../common/clock.ts';
import { createSilentLogger } from '../../common/logger.ts';
import { createMetricsRegistry } from '../../common/metrics.ts';
import { createHomeserverClient } from '../../bridge/homeserver/client.ts';
import { CsApiUnresolvableError } from '../../bridge/token/cs-api-resolver.ts';
import { createMembershipMonitor, ENTRY_TTL_MS, type MembershipMonitor } from '../../bridge/token/membership-monitor.ts';
import {
  createMemoryMonitorStore,
  createRedisMonitorStore,
  REDIS_MONITOR_HASH_KEY,
  type MonitorStore,
} from '../../bridge/token/membership-monitor-store.ts';
import { liveKitIdentityForMember, liveKitRoomAlias } from '../../bridge/token/names.ts';
import { startComposedHomeserver, type ComposedHomeserver } from '../fake-homeserver/compose.ts';
import { testRegistration } from '../fake-homeserver/server.ts';
import { createRecordingSfu, type RecordingSfu } from '../support/appservice-bridge.ts';
import { resolveBridgeConfig, type Env } from '../../bridge/config.ts';
import { createTokenService } from '../../bridge/token/service.ts';
import { captureLog } from '../support/log-capture.ts';
import { createHash } from 'node:crypto';
import { AccessToken } from 'livekit-server-sdk';
import { Room as LkRoom, WebhookEvent } from '@livekit/protocol';
import { HS_TOKEN, LK_KEY, LK_SECRET, startTokenHarness } from './token-harness.ts';
import { startRedisServer, type RunningRedis } from '../support/redis-server.ts';
import { waitFor } from '../support/wait.ts';

const INTERVAL_MS = 30_000;
const reg = testRegistration(null);
let composed: ComposedHomeserver;
let redis: RunningRedis;
/** Paths of the client-server requests the core received. */
const requests: string[] = [];
/** While set, the core answers joined_members with this status. */
let joinedMembersFailure: number | undefined;

beforeAll(async () => {
  redis = await startRedisServer();
  composed = await startComposedHomeserver({
    registration: reg,
    extraRoutes: (app) => {
      app.use((req, res, next) => {
        requests.push(req.path);
        if (joinedMembersFailure && req.path.endsWith('/joined_members')) {
          res.status(joinedMembersFailure).json({ errcode: 'M_UNKNOWN', error: 'Internal server error' });
          return;
        }
        next();
      });
    },
  });
});
afterAll(async () => {
  await composed?.stop();
  await redis?.stop();
});

interface World {
  clock: ManualClock;
  store: MonitorStore;
  sfu: RecordingSfu;
  monitor: MembershipMonitor;
  stopped: string[];
  /** A Matrix room alice and bob (and carol, its creator) are joined to. */
  room(): { roomId: string; sfuRoom: string };
  /** The identity of `user`'s device, registered as if a token had been issued. */
  register(roomId: string, user: string, device?: string): Promise<string>;
  leave(roomId: string, user: string): void;
  join(roomId: string, user: string): void;
  /** On the SFU and told by webhook. */
  connect(roomId: string, identity: string): Promise<void>;
  newMonitor(opts?: { replicaId?: string; ownCsApi?: () => Promise<string>; store?: MonitorStore }): MembershipMonitor;
  metric(name: string, labels?: Record<string, string>): Promise<number>;
}

const cleanups: (() => Promise<unknown>)[] = [];
afterEach(async () => {
  joinedMembersFailure = undefined;
  while (cleanups.length) await cleanups.pop()!();
});

let users: { carol: string; alice: string; bob: string } | undefined;

async function world(kind: 'memory' | 'redis', opts: { ownCsApi?: () => Promise<string> } = {}): Promise<World> {
  const model = composed.hs.model;
  users ??= { carol: model.registerUser('carol').userId, alice: model.registerUser('alice').userId, bob: model.registerUser('bob').userId };
  const { carol, alice, bob } = users;
  const clock = createManualClock(Date.now());
  let conn: Redis | undefined;
  if (kind === 'redis') {
    conn = new Redis(redis.url);
    await conn.flushdb();
    cleanups.push(async () => conn!.disconnect());
  }
  const store = conn ? createRedisMonitorStore({ redis: conn, logger: createSilentLogger() }) : createMemoryMonitorStore(clock);
  const sfu = createRecordingSfu(clock);
  const stopped: string[] = [];
  const metrics = createMetricsRegistry({ defaultMetrics: false });
  const newMonitor: World['newMonitor'] = (o = {}) => {
    const m = createMembershipMonitor({
      clock,
      logger: createSilentLogger(),
      metrics: o.replicaId ? createMetricsRegistry({ defaultMetrics: false }) : metrics,
      // One store for all (the Redis one is stateless over the shared connection).
      store: o.store ?? store,
      sfu,
      homeserver: createHomeserverClient(),
      ownCsApi: o.ownCsApi ?? opts.ownCsApi ?? (async () => composed.hs.url),
      asToken: reg.as_token,
      serverName: composed.hs.serverName,
      intervalMs: INTERVAL_MS,
      stopDelayedLeave: async (room, identity) => void stopped.push(`${room} ${identity}`),
      replicaId: o.replicaId ?? 'replica-a',
      random: () => 0.5,
    });
    cleanups.push(() => m.close());
    return m;
  };
  const monitor = newMonitor();
  const w: World = {
    clock,
    store,
    sfu,
    monitor,
    stopped,
    room() {
      const roomId = model.createRoom(carol, { version: '10', invite: [alice, bob] });
      model.setMembership(alice, roomId, alice, 'join');
      model.setMembership(bob, roomId, bob, 'join');
      return { roomId, sfuRoom: liveKitRoomAlias(roomId, 'm.call#') };
    },
    async register(roomId, user, device = 'DEV') {
      const identity = liveKitIdentityForMember(user, device, `${user}:${device}`);
      await monitor.register({ room: liveKitRoomAlias(roomId, 'm.call#'), identity, roomId, userId: user });
      return identity;
    },
    leave: (roomId, user) => void model.setMembership(user, roomId, user, 'leave'),
    join(roomId, user) {
      model.setMembership(carol, roomId, user, 'invite');
      model.setMembership(user, roomId, user, 'join');
    },
    async connect(roomId, identity) {
      const room = liveKitRoomAlias(roomId, 'm.call#');
      sfu.connect(room, identity);
      await monitor.onSfuEvent(room, identity, 'joined');
    },
    newMonitor,
    async metric(name, labels = {}) {
      const m = (await metrics.getSingleMetric(name)?.get())?.values ?? [];
      return m.filter((v) => Object.entries(labels).every(([k, x]) => v.labels[k] === x)).reduce((a, v) => a + v.value, 0);
    },
  };
  return w;
}

const present = (w: World, roomId: string, identity: string) => w.sfu.rooms.get(liveKitRoomAlias(roomId, 'm.call#'))?.participants.has(identity) ?? false;
const joinedMembersCalls = (roomId: string) => requests.filter((p) => decodeURIComponent(p) === `/_matrix/client/v3/rooms/${roomId}/joined_members`).length;

for (const kind of ['memory', 'redis'] as const) {
  describe(`membership monitor with the ${kind} store`, () => {
    it('connected_non_member_is_kicked: permissions revoked, then removed, its delegated leave stopped, kept as kicked', async () => {
      const w = await world(kind);
      const { roomId, sfuRoom } = w.room();
      const id = await w.register(roomId, users!.alice);
      await w.connect(roomId, id);
      w.leave(roomId, users!.alice);
      expect(await w.monitor.sweep()).toEqual({ swept: true, kicked: 1 });
      expect(w.sfu.calls.filter((c) => !c.startsWith('create'))).toEqual([`revoke ${sfuRoom} ${id}`, `remove ${sfuRoom} ${id}`]);
      expect(present(w, roomId, id)).toBe(false);
      expect(w.stopped).toEqual([`${sfuRoom} ${id}`]);
      expect(await w.store.get(sfuRoom, id)).toMatchObject({ kicked: true, presence: 'left' });
      expect(await w.metric('matrixrtc_membership_monitor_kicks_total', { result: 'removed' })).toBe(1);
    });

    it('member_is_left_alone', async () => {
      const w = await world(kind);
      const { roomId, sfuRoom } = w.room();
      const id = await w.register(roomId, users!.bob);
      await w.connect(roomId, id);
      expect(await w.monitor.sweep()).toEqual({ swept: true, kicked: 0 });
      expect(present(w, roomId, id)).toBe(true);
      expect(w.stopped).toEqual([]);
      expect(await w.store.get(sfuRoom, id)).toMatchObject({ kicked: false, presence: 'connected' });
    });

    it('kicked_participant_reconnecting_is_removed_again, at once on its participant_joined, without waiting for a sweep', async () => {
      const w = await world(kind);
      const { roomId, sfuRoom } = w.room();
      const id = await w.register(roomId, users!.alice);
      await w.connect(roomId, id);
      w.leave(roomId, users!.alice);
      await w.monitor.sweep();
      await w.monitor.onSfuEvent(sfuRoom, id, 'left');
      expect(await w.store.get(sfuRoom, id)).toMatchObject({ kicked: true });
      await w.connect(roomId, id);
      expect(present(w, roomId, id)).toBe(false);
      expect(w.sfu.calls.filter((c) => c.startsWith('remove'))).toHaveLength(2);
    });

    it('kicked_participant_readmitted_to_the_room_stays', async () => {
      const w = await world(kind);
      const { roomId, sfuRoom } = w.room();
      const id = await w.register(roomId, users!.alice);
      await w.connect(roomId, id);
      w.leave(roomId, users!.alice);
      await w.monitor.sweep();
      w.join(roomId, users!.alice);
      await w.connect(roomId, id);
      expect(present(w, roomId, id)).toBe(true);
      expect(await w.store.get(sfuRoom, id)).toMatchObject({ kicked: false, presence: 'connected' });
      expect((await w.monitor.sweep()).kicked).toBe(0);
    });

    it('re_registration_clears_kick and re_registration_keeps_connected_state', async () => {
      const w = await world(kind);
      const { roomId, sfuRoom } = w.room();
      const id = await w.register(roomId, users!.alice);
      await w.connect(roomId, id);
      w.leave(roomId, users!.alice);
      await w.monitor.sweep();
      expect((await w.store.get(sfuRoom, id))?.kicked).toBe(true);
      w.join(roomId, users!.alice);
      await w.register(roomId, users!.alice);
      expect((await w.store.get(sfuRoom, id))?.kicked).toBe(false);

      const bob = await w.register(roomId, users!.bob);
      await w.connect(roomId, bob);
      await w.register(roomId, users!.bob);
      expect((await w.store.get(sfuRoom, bob))?.presence).toBe('connected');
    });

    it('pending_participant_is_kicked_once_connected, and untracked_join_is_ignored', async () => {
      const w = await world(kind);
      const { roomId, sfuRoom } = w.room();
      const id = await w.register(roomId, users!.alice);
      w.leave(roomId, users!.alice);
      expect((await w.monitor.sweep()).kicked).toBe(0);
      expect(joinedMembersCalls(roomId)).toBe(0); // nobody connected: nothing to ask
      await w.connect(roomId, id);
      expect((await w.monitor.sweep()).kicked).toBe(1);

      await w.monitor.onSfuEvent(sfuRoom, 'stranger', 'joined');
      expect(await w.store.get(sfuRoom, 'stranger')).toBeUndefined();
    });

    it('one_membership_query_per_room, and rooms_are_independent', async () => {
      const w = await world(kind);
      const a = w.room();
      const b = w.room();
      const ids = [await w.register(a.roomId, users!.alice, 'D1'), await w.register(a.roomId, users!.alice, 'D2'), await w.register(a.roomId, users!.bob)];
      for (const id of ids) await w.connect(a.roomId, id);
      const inB = await w.register(b.roomId, users!.alice);
      await w.connect(b.roomId, inB);
      w.leave(a.roomId, users!.alice);
      expect((await w.monitor.sweep()).kicked).toBe(2);
      expect(joinedMembersCalls(a.roomId)).toBe(1);
      expect(joinedMembersCalls(b.roomId)).toBe(1);
      expect(present(w, a.roomId, ids[2]!)).toBe(true);
      expect(present(w, b.roomId, inB)).toBe(true);
    });

    it('server_left_deletes_livekit_rooms: joined_members 403 and is_joined(server) false', async () => {
      const w = await world(kind);
      const { roomId, sfuRoom } = w.room();
      const id = await w.register(roomId, users!.alice);
      await w.connect(roomId, id);
      for (const u of [users!.alice, users!.bob, users!.carol]) w.leave(roomId, u);
      await w.monitor.sweep();
      expect(w.sfu.calls).toContain(`delete ${sfuRoom}`);
      expect(await w.store.get(sfuRoom, id)).toBeUndefined();
      expect(await w.metric('matrixrtc_membership_monitor_queries_total', { result: 'refused' })).toBe(1);
    });

    it('refusal_with_server_joined_fails_open, and refusal_with_unverifiable_server_membership_fails_open', async () => {
      const w = await world(kind);
      const { roomId } = w.room();
      const id = await w.register(roomId, users!.alice);
      await w.connect(roomId, id);
      for (const u of [users!.alice, users!.bob, users!.carol]) w.leave(roomId, u);
      // is_joined says our server is still there (a registration not covering its users).
      composed.tokenApi.setJoined(roomId, composed.hs.serverName, true);
      expect((await w.monitor.sweep()).kicked).toBe(0);
      composed.tokenApi.setJoined(roomId, composed.hs.serverName, false);
      composed.tokenApi.setIsJoinedFailure(500);
      try {
        expect((await w.monitor.sweep()).kicked).toBe(0);
      } finally {
        composed.tokenApi.setIsJoinedFailure(undefined);
      }
      expect(present(w, roomId, id)).toBe(true);
      expect(w.sfu.calls.some((c) => c.startsWith('delete') || c.startsWith('remove'))).toBe(false);
    });

    it('homeserver_error_fails_open, and unresolvable_cs_api_fails_open', async () => {
      const w = await world(kind);
      const { roomId } = w.room();
      const id = await w.register(roomId, users!.alice);
      await w.connect(roomId, id);
      w.leave(roomId, users!.alice);
      joinedMembersFailure = 500;
      expect((await w.monitor.sweep()).kicked).toBe(0);
      joinedMembersFailure = undefined;
      await w.monitor.close(); // hands the sweep lease over
      const unresolvable = w.newMonitor({
        replicaId: 'replica-b',
        ownCsApi: async () => {
          throw new CsApiUnresolvableError('localhost', 'no .well-known/matrix/client');
        },
      });
      expect(await unresolvable.sweep()).toEqual({ swept: true, kicked: 0 });
      expect(present(w, roomId, id)).toBe(true);
      expect(await w.metric('matrixrtc_membership_monitor_queries_total', { result: 'failed' })).toBe(1);
    });

    it('participant_left_stops_tracking: not checked while away, watched again when it comes back with its token', async () => {
      const w = await world(kind);
      const { roomId, sfuRoom } = w.room();
      const id = await w.register(roomId, users!.alice);
      await w.connect(roomId, id);
      w.sfu.rooms.get(sfuRoom)!.participants.delete(id);
      await w.monitor.onSfuEvent(sfuRoom, id, 'left');
      w.leave(roomId, users!.alice);
      expect((await w.monitor.sweep()).kicked).toBe(0);
      expect(joinedMembersCalls(roomId)).toBe(0);
      await w.connect(roomId, id);
      expect((await w.monitor.sweep()).kicked).toBe(1);
    });

    it('room_finished_stops_tracking_that_room_only', async () => {
      const w = await world(kind);
      const a = w.room();
      const b = w.room();
      const inA = await w.register(a.roomId, users!.alice);
      const inB = await w.register(b.roomId, users!.alice);
      await w.monitor.onRoomFinished(a.sfuRoom);
      expect(await w.store.get(a.sfuRoom, inA)).toBeUndefined();
      expect(await w.store.get(b.sfuRoom, inB)).toBeDefined();
    });

    it('absent_participants_expire_with_their_token (70 min after the last change); connected ones stay', async () => {
      const w = await world(kind);
      const { roomId, sfuRoom } = w.room();
      const absent = await w.register(roomId, users!.alice);
      const connected = await w.register(roomId, users!.bob);
      await w.connect(roomId, connected);
      w.clock.advance(ENTRY_TTL_MS - 1);
      await w.monitor.sweep();
      expect(await w.store.get(sfuRoom, absent)).toBeDefined();
      w.clock.advance(1);
      await w.monitor.sweep();
      expect(await w.store.get(sfuRoom, absent)).toBeUndefined();
      expect(await w.store.get(sfuRoom, connected)).toBeDefined();
    });

    it('presence_learnt_in_sweep_enables_kick: no participant_joined webhook, found by ListParticipants', async () => {
      const w = await world(kind);
      const { roomId, sfuRoom } = w.room();
      const id = await w.register(roomId, users!.alice);
      w.sfu.connect(sfuRoom, id);
      w.leave(roomId, users!.alice);
      expect((await w.monitor.sweep()).kicked).toBe(1);
      expect(present(w, roomId, id)).toBe(false);
    });

    it('sweeps_run_periodically: the first one interval after start, then every interval', async () => {
      const w = await world(kind);
      const { roomId } = w.room();
      const id = await w.register(roomId, users!.alice);
      await w.connect(roomId, id);
      w.monitor.start();
      w.clock.advance(INTERVAL_MS - 1);
      await new Promise((r) => setTimeout(r, 50));
      expect(joinedMembersCalls(roomId)).toBe(0);
      w.clock.advance(1);
      await waitFor('first sweep', () => joinedMembersCalls(roomId) === 1);
      await waitFor('sweep done', async () => (await w.metric('matrixrtc_membership_monitor_sweeps_total', { result: 'done' })) === 1);
      w.leave(roomId, users!.alice);
      w.clock.advance(INTERVAL_MS);
      await waitFor('kicked by the second sweep', () => !present(w, roomId, id));
    });
  });
}

const entry = (identity: string) => ({ room: 'R', identity, roomId: '!r:localhost', userId: '@u:localhost', presence: 'pending' as const, kicked: false, changedAt: 0 });

describe('the store is bounded', () => {
  it.each(['memory', 'redis'] as const)('%s: beyond maxEntries a new participant is refused, a known one still updated', async (kind) => {
    const clock = createManualClock();
    let store: MonitorStore;
    if (kind === 'redis') {
      const conn = new Redis(redis.url);
      cleanups.push(async () => conn.disconnect());
      await conn.flushdb();
      store = createRedisMonitorStore({ redis: conn, logger: createSilentLogger(), maxEntries: 2 });
    } else store = createMemoryMonitorStore(clock, 2);
    expect(await store.put(entry('a'))).toBe(true);
    expect(await store.put(entry('b'))).toBe(true);
    expect(await store.put(entry('c'))).toBe(false);
    expect(await store.put({ ...entry('a'), presence: 'connected' })).toBe(true);
    expect((await store.all()).map((e) => `${e.identity}:${e.presence}`).toSorted()).toEqual(['a:connected', 'b:pending']);
  });
});

describe('membership monitor across replicas (Redis store)', () => {
  it('participants_are_persisted_and_recovered: a new process on the same Redis kicks what the old one watched', async () => {
    const w = await world('redis');
    const { roomId, sfuRoom } = w.room();
    const id = await w.register(roomId, users!.alice);
    await w.connect(roomId, id);
    await w.monitor.close();
    const conn = new Redis(redis.url);
    cleanups.push(async () => conn.disconnect());
    expect(await conn.hlen(REDIS_MONITOR_HASH_KEY)).toBe(1);
    w.leave(roomId, users!.alice);
    const next = w.newMonitor({ replicaId: 'replica-next' });
    expect((await next.sweep()).kicked).toBe(1);
    expect(present(w, roomId, id)).toBe(false);
    expect(await w.store.get(sfuRoom, id)).toMatchObject({ kicked: true });
  });

  it('sweeps again within a second of the store coming back, not an interval later', async () => {
    const w = await world('redis');
    const { roomId } = w.room();
    const id = await w.register(roomId, users!.alice);
    await w.connect(roomId, id);
    await w.monitor.close();
    let down = false;
    let attempts = 0;
    const cut = <T>(fn: () => Promise<T>): Promise<T> => (down ? Promise.reject(new Error('connection lost')) : fn());
    const flaky: MonitorStore = {
      get: (r, i) => cut(() => w.store.get(r, i)),
      put: (e) => cut(() => w.store.put(e)),
      delete: (r, i) => cut(() => w.store.delete(r, i)),
      all: () => cut(() => w.store.all()),
      claim: (n, o, t) => (attempts++, cut(() => w.store.claim(n, o, t))),
      release: (n, o) => cut(() => w.store.release(n, o)),
      close: async () => {},
    };
    const m = w.newMonitor({ replicaId: 'replica-flaky', store: flaky });
    m.start();
    down = true;
    w.clock.advance(INTERVAL_MS);
    await waitFor('the sweep failed and the retry is armed', () => attempts === 1 && w.clock.pending() === 1);
    down = false;
    w.leave(roomId, users!.alice);
    w.clock.advance(1000);
    await waitFor('swept and kicked a second after the recovery', () => !present(w, roomId, id));
  });

  it('only one replica sweeps per interval, so a participant is removed once and the homeserver asked once per room', async () => {
    const w = await world('redis');
    const { roomId } = w.room();
    const id = await w.register(roomId, users!.alice);
    await w.connect(roomId, id);
    w.leave(roomId, users!.alice);
    const sibling = w.newMonitor({ replicaId: 'replica-b' });
    const [a, b] = await Promise.all([w.monitor.sweep(), sibling.sweep()]);
    expect([a.swept, b.swept].filter(Boolean)).toHaveLength(1);
    expect(w.sfu.calls.filter((c) => c.startsWith('remove'))).toHaveLength(1);
    expect(joinedMembersCalls(roomId)).toBe(1);
    // The sweeper keeps the lease while it lives; the other takes over once it stops.
    const [sweeper, other] = a.swept ? [w.monitor, sibling] : [sibling, w.monitor];
    expect((await other.sweep()).swept).toBe(false);
    expect((await sweeper.sweep()).swept).toBe(true);
    await sweeper.close();
    expect((await other.sweep()).swept).toBe(true);
  });
});

describe('whether the monitor runs, said once at start-up', () => {
  const base: Env = {
    LIVEKIT_URL: 'ws://127.0.0.1:9',
    LIVEKIT_KEY: 'key',
    LIVEKIT_SECRET: 'secret-0123456789abcdef-0123456789ab',
    LIVEKIT_FULL_ACCESS_HOMESERVERS: 'localhost',
  };
  const registration: Env = { LIVEKIT_AS_TOKEN: 'as', LIVEKIT_HS_TOKEN: 'hs', LIVEKIT_HS_SERVER_NAME: 'localhost', BRIDGE_HOMESERVER_URL: 'http://127.0.0.1:9' };
  async function startUp(env: Env) {
    const log = captureLog('info');
    const service = createTokenService({ config: resolveBridgeConfig({ ...base, ...env }), logger: log.logger, clock: createManualClock(), metrics: createMetricsRegistry({ defaultMetrics: false }) });
    await service.start();
    await service.close();
    return { running: service.monitor !== undefined, lines: log.lines.filter((l) => l.msg.startsWith('membership monitor')).map((l) => ({ level: l.level, msg: l.msg })) };
  }

  it.each([
    ['on with a registration (default 30 s)', registration, true, 30, 'membership monitor on'],
    ['off without a registration, at info when the interval is the default', {}, false, 30, 'membership monitor off: it asks the homeserver'],
    ['off without a registration, a warning when the interval was set (accepted as lk-jwt-service does, not refused)', { LIVEKIT_MEMBERSHIP_CHECK_INTERVAL_SECONDS: '10' }, false, 40, 'membership monitor off: it asks the homeserver'],
    ['off with interval 0', { ...registration, LIVEKIT_MEMBERSHIP_CHECK_INTERVAL_SECONDS: '0' }, false, 30, 'membership monitor off (LIVEKIT_MEMBERSHIP_CHECK_INTERVAL_SECONDS=0)'],
    ['off with membership_check: false', { ...registration, BRIDGE_MEMBERSHIP_CHECK: 'false' }, false, 30, 'membership monitor off (membership_check: false)'],
  ])('%s', async (_name, env, running, level, text) => {
    const r = await startUp(env as Env);
    expect(r.running).toBe(running);
    expect(r.lines).toHaveLength(1);
    expect(r.lines[0]!.level).toBe(level);
    expect(r.lines[0]!.msg.startsWith(text)).toBe(true);
  });
});

describe('the token service feeds the monitor', () => {
  it('a C-S get_token registers the participant, participant_joined of a removed one removes it again at once, room_finished forgets the room', async () => {
    const clock = createManualClock(Date.now());
    const sfu = createRecordingSfu(clock);
    const h = await startTokenHarness({ deps: { sfu }, clock });
    cleanups.push(() => h.stop());
    const roomId = '!call:example.com';
    const alice = `@alice:${h.fed.serverName}`;
    h.hs.setJoined(roomId, alice, true);
    const res = await h.post(
      '/_matrix/client/unstable/io.element.msc4195/rtc/livekit/get_token',
      { url: h.config.livekit.url, room_id: roomId, slot_id: 'm.call#', member: { id: 'm1', claimed_device_id: 'DEV' } },
      { Authorization: `Bearer ${HS_TOKEN}`, 'X-Matrix-User-Identifier': alice },
    );
    expect(res.status).toBe(200);
    const room = liveKitRoomAlias(roomId, 'm.call#');
    const identity = liveKitIdentityForMember(alice, 'DEV', 'm1');
    const monitor = h.service.monitor!;
    sfu.connect(room, identity);
    expect(await monitor.sweep()).toEqual({ swept: true, kicked: 0 });
    h.hs.setJoined(roomId, alice, false);
    expect(await monitor.sweep()).toEqual({ swept: true, kicked: 1 });
    const removals = () => sfu.calls.filter((c) => c === `remove ${room} ${identity}`).length;
    expect(removals()).toBe(1);

    sfu.connect(room, identity); // back with a token the SFU did not revoke
    expect(await h.webhook('participant_joined', room, identity)).toBe(200);
    await waitFor('removed again on its participant_joined', () => removals() === 2);

    const ev = new WebhookEvent({ event: 'room_finished', room: new LkRoom({ name: room }), id: 'EV_finished', createdAt: BigInt(Math.floor(Date.now() / 1000)) });
    const body = JSON.stringify(ev.toJson());
    const at = new AccessToken(LK_KEY, LK_SECRET, { ttl: '5m' });
    at.sha256 = createHash('sha256').update(body).digest('base64');
    const finished = await fetch(`${h.url}/sfu_webhook`, { method: 'POST', headers: { 'Content-Type': 'application/webhook+json', Authorization: await at.toJwt() }, body });
    expect(finished.status).toBe(200);
    sfu.connect(room, identity);
    await waitFor('room forgotten', async () => (await monitor.sweep()).kicked === 0 && removals() === 2);
  });
});
