/**
 * The bridge's appservice against the fake Synapse (real HTTP pushes, real client-server reads)
 * with the memory store and with the Redis store on a real redis-server. The SFU side is the
 * recording RoomService double from test/support/appservice-bridge.ts until the SFU's
 * RoomService runs end to end; assertions are on the RoomService calls the bridge makes.
 */
import { afterEach, beforeAll, afterAll, describe, expect, it } from 'vitest';
import { Redis } from 'ioredis';
import { createManualClock, type ManualClock } from '../../common/clock.ts';
import { createMemoryStore } from '../../bridge/store/memory-store.ts';
import { createRedisStore } from '../../bridge/store/redis-store.ts';
import type { BridgeStore } from '../../bridge/store/store.ts';
import type { SfuRoomService } from '../../bridge/sfu/room-service.ts';
import { identitiesFor } from '../../bridge/lifecycle/lifecycle.ts';
import { legacyLiveKitIdentity, liveKitIdentityForMember, liveKitRoomAlias } from '../../bridge/token/names.ts';
import { REDIS_KEYS } from '../../bridge/store/redis-store.ts';
import { formatEvent } from '../fake-homeserver/event-format.ts';
import { startFakeHomeserver, testRegistration, type FakeHomeserver } from '../fake-homeserver/server.ts';
import { startAppserviceBridge, createRecordingSfu, type RecordingSfu, type RunningAppserviceBridge } from '../support/appservice-bridge.ts';
import { startRedisServer, type RunningRedis } from '../support/redis-server.ts';
import { reservePort } from '../support/ports.ts';
import { waitFor } from '../support/wait.ts';

const CALL = 'org.matrix.msc3401.call.member';
const SLOT = 'm.call#ROOM';
const LEAVE_GRACE_SECONDS = 10;

let redis: RunningRedis;
beforeAll(async () => {
  redis = await startRedisServer();
});
afterAll(async () => {
  await redis.stop();
});

const cleanups: (() => Promise<void>)[] = [];
afterEach(async () => {
  while (cleanups.length) await cleanups.pop()!().catch(() => undefined);
});

function joinContent(roomId: string, deviceId: string, userId: string, extra: Record<string, unknown> = {}) {
  return {
    application: 'm.call',
    call_id: '',
    scope: 'm.room',
    device_id: deviceId,
    membershipID: `${userId}:${deviceId}`,
    expires: 14_400_000,
    'm.call.intent': 'video',
    focus_active: { type: 'livekit', focus_selection: 'multi_sfu' },
    foci_preferred: [{ livekit_alias: roomId, type: 'livekit', livekit_service_url: 'https://rtc.example.org/livekit/jwt' }],
    ...extra,
  };
}

for (const kind of ['memory', 'redis'] as const) {
  describe(`bridge appservice with the ${kind} store`, () => {
    let db = 0;
    async function makeStore(clock: ManualClock, fresh = true): Promise<BridgeStore> {
      if (kind === 'memory') return createMemoryStore({ clock });
      const client = new Redis(`${redis.url}/${db}`);
      if (fresh) await client.flushdb();
      const store = createRedisStore({ redis: client });
      cleanups.push(() => store.close());
      return store;
    }

    async function world(opts: { graceSeconds?: number; leaveGraceSeconds?: number; pushes?: boolean; wrapSfu?: (s: RecordingSfu) => SfuRoomService } = {}) {
      const clock = createManualClock(Date.now());
      const reserved = await reservePort();
      cleanups.push(() => reserved.release());
      const port = reserved.port;
      const reg = testRegistration(opts.pushes === false ? null : `http://127.0.0.1:${port}`);
      const hs = await startFakeHomeserver({ registration: reg, clock, backoffBaseMs: 1000 });
      cleanups.push(() => hs.stop());
      const carol = hs.model.registerUser('carol').userId;
      const alice = hs.model.registerUser('alice').userId;
      const bob = hs.model.registerUser('bob').userId;
      const roomId = hs.model.createRoom(carol, { version: '10', invite: [alice, bob], power_level_content_override: { events: { [CALL]: 0 }, users: { [carol]: 100 } } });
      hs.model.setMembership(alice, roomId, alice, 'join');
      hs.model.setMembership(bob, roomId, bob, 'join');
      const sfu = createRecordingSfu(clock);
      const store = await makeStore(clock);
      const start = async (s: BridgeStore = store) => {
        await reserved.release();
        const b = await startAppserviceBridge({
          homeserverUrl: hs.url,
          asToken: reg.as_token,
          hsToken: reg.hs_token,
          appserviceId: reg.id,
          store: s,
          sfu: opts.wrapSfu ? opts.wrapSfu(sfu) : sfu,
          clock,
          graceSeconds: opts.graceSeconds ?? 30,
          leaveGraceSeconds: opts.leaveGraceSeconds ?? LEAVE_GRACE_SECONDS,
          port,
        });
        cleanups.push(() => b.stop());
        return b;
      };
      const bridge = await start();
      await waitFor('setup delivered', () => hs.pusher.pendingCount() === 0);
      const sfuRoom = liveKitRoomAlias(roomId, SLOT);
      return { clock, hs, reg, carol, alice, bob, roomId, sfu, store, bridge, start, sfuRoom, port };
    }

    type World = Awaited<ReturnType<typeof world>>;
    const aliceJoins = (w: World) => w.hs.model.sendState(w.alice, w.roomId, CALL, `_${w.alice}_DEVICEA_m.call`, joinContent(w.roomId, 'DEVICEA', w.alice));
    const bobJoins = (w: World) => w.hs.model.sendState(w.bob, w.roomId, CALL, `_${w.bob}_DEVICEB_m.call`, joinContent(w.roomId, 'DEVICEB', w.bob));
    const delivered = (w: World) => waitFor('pushes delivered', () => w.hs.pusher.pendingCount() === 0 && !w.hs.pusher.isDown());
    const aliceIds = (w: World) => [legacyLiveKitIdentity(w.alice, 'DEVICEA'), liveKitIdentityForMember(w.alice, 'DEVICEA', `${w.alice}:DEVICEA`)];

    it('creates the SFU room named with the token service hash when the first member joins', async () => {
      const w = await world();
      aliceJoins(w);
      await waitFor('room created', () => w.sfu.rooms.has(w.sfuRoom));
      expect(w.sfu.calls).toContain(`create ${w.sfuRoom}`);
      expect(await w.bridge.appservice.oracle.isJoined(w.roomId, w.alice)).toBe(true);
      expect(await w.bridge.appservice.oracle.isJoined(w.roomId, '@nobody:localhost')).toBeUndefined();
    });

    for (const how of ['leave', 'kick', 'ban', 'expiry', 'redaction'] as const) {
      it(`removes the participant (both identity forms present, one RemoveParticipant each and none for the absent one) on their ${how}`, async () => {
        const w = await world();
        const joinId = aliceJoins(w);
        await waitFor('room created', () => w.sfu.rooms.has(w.sfuRoom));
        for (const id of aliceIds(w)) w.sfu.connect(w.sfuRoom, id);
        if (how === 'leave') w.hs.model.sendState(w.alice, w.roomId, CALL, `_${w.alice}_DEVICEA_m.call`, {});
        if (how === 'kick') w.hs.model.setMembership(w.carol, w.roomId, w.alice, 'leave', 'kick');
        if (how === 'ban') w.hs.model.setMembership(w.carol, w.roomId, w.alice, 'ban', 'ban');
        if (how === 'redaction') w.hs.model.redact(w.alice, w.roomId, joinId);
        if (how === 'expiry') {
          await delivered(w);
          w.clock.advance(14_400_000 + 1_000);
        }
        if (how === 'leave') {
          // A plain {} leave waits for its grace first.
          await delivered(w);
          await waitFor('leave pending', async () => (await w.store.listPendingLeaves()).length === 1);
          expect(w.sfu.rooms.get(w.sfuRoom)?.participants.size).toBe(2);
          // The fake's origin_server_ts runs a few ms ahead of the clock when events come fast.
          w.clock.advance(LEAVE_GRACE_SECONDS * 1000 + 100);
        }
        await waitFor('participant removed', () => w.sfu.rooms.get(w.sfuRoom)?.participants.size === 0);
        const removes = w.sfu.calls.filter((c) => c.startsWith('remove '));
        expect(removes.toSorted()).toEqual(aliceIds(w).map((id) => `remove ${w.sfuRoom} ${id}`).toSorted());
        if (how === 'kick' || how === 'ban') expect(await w.bridge.appservice.oracle.isJoined(w.roomId, w.alice)).toBe(false);
      });
    }

    it('deletes the SFU room after the grace period once the last member left, and a rejoin inside the grace keeps it', async () => {
      const w = await world({ graceSeconds: 10, leaveGraceSeconds: 0 });
      aliceJoins(w);
      await waitFor('room created', () => w.sfu.rooms.has(w.sfuRoom));
      w.hs.model.sendState(w.alice, w.roomId, CALL, `_${w.alice}_DEVICEA_m.call`, {});
      await delivered(w);
      await waitFor('deletion scheduled', async () => (await w.store.listRoomDeletions()).has(w.sfuRoom));
      w.clock.advance(5_000);
      aliceJoins(w);
      await delivered(w);
      await waitFor('deletion cancelled', async () => !(await w.store.listRoomDeletions()).has(w.sfuRoom));
      w.clock.advance(20_000);
      expect(w.sfu.rooms.has(w.sfuRoom)).toBe(true);
      w.hs.model.sendState(w.alice, w.roomId, CALL, `_${w.alice}_DEVICEA_m.call`, {});
      await delivered(w);
      await waitFor('deletion scheduled again', async () => (await w.store.listRoomDeletions()).has(w.sfuRoom));
      w.clock.advance(9_999);
      expect(w.sfu.rooms.has(w.sfuRoom)).toBe(true);
      w.clock.advance(1);
      await waitFor('room deleted', () => !w.sfu.rooms.has(w.sfuRoom));
    });

    it('ignores and counts a leave written by another user at the victim`s key; the victim stays', async () => {
      const w = await world();
      aliceJoins(w);
      await waitFor('room created', () => w.sfu.rooms.has(w.sfuRoom));
      for (const id of aliceIds(w)) w.sfu.connect(w.sfuRoom, id);
      w.hs.model.sendState(w.bob, w.roomId, CALL, `_${w.alice}_DEVICEA_m.call`, {});
      await delivered(w);
      const forged = await w.bridge.registry.getSingleMetric('matrixrtc_bridge_forged_memberships_total')!.get();
      expect(forged.values[0]!.value).toBe(1);
      expect(w.sfu.rooms.get(w.sfuRoom)!.participants.size).toBe(2);
      expect((await w.store.listMemberships(w.roomId)).map((m) => m.userId)).toEqual([w.alice]);
    });

    it('applies the same transaction delivered twice only once', async () => {
      const w = await world();
      const joinId = aliceJoins(w);
      await waitFor('room created', () => w.sfu.rooms.has(w.sfuRoom));
      for (const id of aliceIds(w)) w.sfu.connect(w.sfuRoom, id);
      const joinTs = w.hs.model.stateEvent(w.roomId, CALL, `_${w.alice}_DEVICEA_m.call`)!.origin_server_ts;
      expect(w.hs.model.stateEvent(w.roomId, CALL, `_${w.alice}_DEVICEA_m.call`)!.event_id).toBe(joinId);
      const ev = {
        age: 1, content: {}, event_id: '$dup', origin_server_ts: joinTs + 1, room_id: w.roomId, sender: w.alice,
        state_key: `_${w.alice}_DEVICEA_m.call`, type: CALL, unsigned: { age: 1 }, user_id: w.alice,
      };
      const put = () => fetch(`${w.bridge.url}/_matrix/app/v1/transactions/9999`, {
        method: 'PUT', headers: { Authorization: `Bearer ${w.reg.hs_token}`, 'Content-Type': 'application/json' }, body: JSON.stringify({ events: [ev] }),
      });
      const [a, b] = await Promise.all([put(), put()]);
      const c = await put();
      expect([a.status, b.status, c.status]).toEqual([200, 200, 200]);
      expect(await c.json()).toEqual({});
      w.clock.advance(LEAVE_GRACE_SECONDS * 1000 + 100);
      await waitFor('participant removed', () => w.sfu.rooms.get(w.sfuRoom)?.participants.size === 0);
      const removes = w.sfu.calls.filter((x) => x.startsWith('remove'));
      const present = identitiesFor({ userId: w.alice, deviceId: 'DEVICEA', memberId: `${w.alice}:DEVICEA` }).filter((id) => aliceIds(w).includes(id));
      expect(removes.toSorted()).toEqual(present.map((id) => `remove ${w.sfuRoom} ${id}`).toSorted());
      const txns = await w.bridge.registry.getSingleMetric('matrixrtc_bridge_appservice_transactions_total')!.get();
      expect(txns.values.find((v) => v.labels.outcome === 'duplicate')?.value).toBe(2);
    });

    it('ignores an older join re-sent under a new transaction id after a later leave', async () => {
      const w = await world({ leaveGraceSeconds: 0 });
      const key = `_${w.alice}_DEVICEA_m.call`;
      aliceJoins(w);
      await delivered(w);
      const oldJoin = formatEvent(w.hs.model.stateEvent(w.roomId, CALL, key)!, w.clock.now());
      w.hs.model.sendState(w.alice, w.roomId, CALL, key, {});
      await delivered(w);
      await waitFor('membership ended', async () => (await w.store.listMemberships(w.roomId)).length === 0);
      const creates = w.sfu.calls.filter((c) => c.startsWith('create ')).length;
      const r = await fetch(`${w.bridge.url}/_matrix/app/v1/transactions/resent-1`, {
        method: 'PUT',
        headers: { Authorization: `Bearer ${w.reg.hs_token}`, 'Content-Type': 'application/json' },
        body: JSON.stringify({ events: [oldJoin] }),
      });
      expect(r.status).toBe(200);
      expect(await w.store.listMemberships(w.roomId)).toEqual([]);
      expect(w.sfu.calls.filter((c) => c.startsWith('create ')).length).toBe(creates);
      const events = await w.bridge.registry.getSingleMetric('matrixrtc_bridge_appservice_events_total')!.get();
      expect(events.values.find((v) => v.labels.kind === 'stale')?.value).toBe(1);
      // A new join (a later event) is applied as usual.
      aliceJoins(w);
      await waitFor('rejoined', async () => (await w.store.listMemberships(w.roomId)).length === 1);
      if (kind === 'redis') {
        // The latest leave is remembered with a TTL, not forever.
        const probe = new Redis(`${redis.url}/${db}`);
        cleanups.push(async () => probe.disconnect());
        expect(await probe.pttl(REDIS_KEYS.leftAt(w.roomId, `state:${key}`))).toBeGreaterThan(0);
      }
    });

    it('a {} leave waiting for its grace survives a restart: the next bridge removes the participant when the grace ends', async () => {
      const w = await world();
      aliceJoins(w);
      await waitFor('room created', () => w.sfu.rooms.has(w.sfuRoom));
      for (const id of aliceIds(w)) w.sfu.connect(w.sfuRoom, id);
      w.hs.model.sendState(w.alice, w.roomId, CALL, `_${w.alice}_DEVICEA_m.call`, {});
      await delivered(w);
      await waitFor('leave pending', async () => (await w.store.listPendingLeaves()).length === 1);
      w.bridge.appservice.stop();
      await w.bridge.stop();
      const store2 = kind === 'redis' ? await makeStore(w.clock, false) : w.store;
      await w.start(store2);
      expect(w.sfu.rooms.get(w.sfuRoom)?.participants.size).toBe(2);
      w.clock.advance(LEAVE_GRACE_SECONDS * 1000 + 100);
      await waitFor('participant removed', () => w.sfu.rooms.get(w.sfuRoom)?.participants.size === 0);
      expect(await store2.listPendingLeaves()).toEqual([]);
    });

    it('a reconcile pass during a {} leave`s grace leaves the participant to the grace', async () => {
      const w = await world();
      aliceJoins(w);
      bobJoins(w);
      await waitFor('room created', () => w.sfu.rooms.has(w.sfuRoom));
      for (const id of aliceIds(w)) w.sfu.connect(w.sfuRoom, id);
      // bob stays in the call, so the SFU room stays owned and reconcile looks at its participants.
      w.sfu.connect(w.sfuRoom, legacyLiveKitIdentity(w.bob, 'DEVICEB'));
      w.hs.model.sendState(w.alice, w.roomId, CALL, `_${w.alice}_DEVICEA_m.call`, {});
      await delivered(w);
      await waitFor('leave pending', async () => (await w.store.listPendingLeaves()).length === 1);
      // The homeserver's state already says {}: reconcile must neither drop it nor remove the participant.
      await w.bridge.appservice.reconciler.run();
      expect(w.sfu.rooms.get(w.sfuRoom)?.participants.size).toBe(3);
      expect(await w.store.listMemberships(w.roomId)).toHaveLength(2);
      w.clock.advance(LEAVE_GRACE_SECONDS * 1000 + 100);
      await waitFor('alice removed, bob kept', () => w.sfu.rooms.get(w.sfuRoom)?.participants.size === 1);
    });

    if (kind === 'redis') {
      it('a sibling replica on the same Redis finishes a {} leave whose replica died during its grace (at its next reconcile pass)', async () => {
        const w = await world();
        aliceJoins(w);
        await waitFor('room created', () => w.sfu.rooms.has(w.sfuRoom));
        for (const id of aliceIds(w)) w.sfu.connect(w.sfuRoom, id);
        // The sibling listens elsewhere; the homeserver pushes to the first replica.
        const sibling = await startAppserviceBridge({
          homeserverUrl: w.hs.url, asToken: w.reg.as_token, hsToken: w.reg.hs_token, appserviceId: w.reg.id,
          store: await makeStore(w.clock, false), sfu: w.sfu, clock: w.clock, port: 0,
        });
        cleanups.push(() => sibling.stop());
        w.hs.model.sendState(w.alice, w.roomId, CALL, `_${w.alice}_DEVICEA_m.call`, {});
        await delivered(w);
        await waitFor('leave pending', async () => (await w.store.listPendingLeaves()).length === 1);
        w.bridge.appservice.stop();
        await w.bridge.stop();
        await sibling.appservice.reconciler.run();
        expect(w.sfu.rooms.get(w.sfuRoom)?.participants.size).toBe(2);
        w.clock.advance(LEAVE_GRACE_SECONDS * 1000 + 100);
        await waitFor('participant removed by the sibling', () => w.sfu.rooms.get(w.sfuRoom)?.participants.size === 0);
        expect(await w.store.listPendingLeaves()).toEqual([]);
      });
    }

    it('observes leave-to-removal right after the first present identity is removed, not after every one', async () => {
      let calls = 0;
      let releaseSecond!: () => void;
      const second = new Promise<void>((r) => (releaseSecond = r));
      const w = await world({
        wrapSfu: (inner) => ({
          ...inner,
          async removeParticipant(name, identity, o) {
            if (++calls === 2) await second;
            return await inner.removeParticipant(name, identity, o);
          },
        }),
      });
      aliceJoins(w);
      await waitFor('room created', () => w.sfu.rooms.has(w.sfuRoom));
      for (const id of aliceIds(w)) w.sfu.connect(w.sfuRoom, id);
      w.hs.model.setMembership(w.carol, w.roomId, w.alice, 'leave', 'kick');
      const observed = async () => {
        const h = await w.bridge.registry.getSingleMetric('matrixrtc_bridge_leave_to_removal_seconds')!.get();
        return h.values.find((v) => (v as { metricName?: string }).metricName === 'matrixrtc_bridge_leave_to_removal_seconds_count')?.value ?? 0;
      };
      await waitFor('observed while the second removal still runs', async () => (await observed()) === 1 && calls === 2);
      expect(w.sfu.rooms.get(w.sfuRoom)?.participants.size).toBe(1);
      releaseSecond();
      await waitFor('both removed', () => w.sfu.rooms.get(w.sfuRoom)?.participants.size === 0);
      expect(await observed()).toBe(1);
    });

    it('a kick during a {} leave`s grace removes at once', async () => {
      const w = await world();
      aliceJoins(w);
      await waitFor('room created', () => w.sfu.rooms.has(w.sfuRoom));
      for (const id of aliceIds(w)) w.sfu.connect(w.sfuRoom, id);
      w.hs.model.sendState(w.alice, w.roomId, CALL, `_${w.alice}_DEVICEA_m.call`, {});
      await delivered(w);
      await waitFor('leave pending', async () => (await w.store.listPendingLeaves()).length === 1);
      w.hs.model.setMembership(w.carol, w.roomId, w.alice, 'leave', 'kick');
      await waitFor('participant removed', () => w.sfu.rooms.get(w.sfuRoom)?.participants.size === 0);
      expect(await w.store.listPendingLeaves()).toEqual([]);
    });

    it('forgets the SFU room`s binding once the room is deleted', async () => {
      const w = await world({ graceSeconds: 5, leaveGraceSeconds: 0 });
      aliceJoins(w);
      await waitFor('room created', () => w.sfu.rooms.has(w.sfuRoom));
      expect(await w.store.lookupSfuRoom(w.sfuRoom)).toEqual({ roomId: w.roomId, slotId: SLOT });
      w.hs.model.sendState(w.alice, w.roomId, CALL, `_${w.alice}_DEVICEA_m.call`, {});
      await delivered(w);
      await waitFor('deletion scheduled', async () => (await w.store.listRoomDeletions()).has(w.sfuRoom));
      w.clock.advance(5_000);
      await waitFor('room deleted', () => !w.sfu.rooms.has(w.sfuRoom));
      await waitFor('binding forgotten', async () => (await w.store.lookupSfuRoom(w.sfuRoom)) === undefined);
    });

    it('ends in the right state when killed after receiving a transaction but before answering', async () => {
      const w = await world({ leaveGraceSeconds: 0 });
      aliceJoins(w);
      await waitFor('room created', () => w.sfu.rooms.has(w.sfuRoom));
      for (const id of aliceIds(w)) w.sfu.connect(w.sfuRoom, id);
      let release!: () => void;
      w.sfu.gate = new Promise<void>((r) => (release = r));
      w.hs.model.sendState(w.alice, w.roomId, CALL, `_${w.alice}_DEVICEA_m.call`, {});
      await waitFor('bridge is processing', () => w.hs.pusher.pendingCount() > 0);
      await new Promise((r) => setImmediate(r));
      // Kill: the listener goes away mid-transaction; the homeserver sees a failure.
      w.bridge.appservice.stop();
      await w.bridge.stop();
      await waitFor('homeserver marked the service down', () => w.hs.pusher.isDown());
      w.sfu.gate = undefined;
      release();
      const store2 = kind === 'redis' ? await makeStore(w.clock, false) : createMemoryStore({ clock: w.clock });
      const b2 = await w.start(store2);
      await waitFor('retry delivered to the new bridge', () => {
        if (w.hs.pusher.isDown()) w.clock.advance(1000);
        return !w.hs.pusher.isDown();
      });
      await waitFor('participant removed', () => w.sfu.rooms.get(w.sfuRoom)?.participants.size === 0);
      expect(await store2.listMemberships(w.roomId)).toEqual([]);
      expect(b2.appservice).toBeDefined();
    });

    it('reaches the right state through reconcile when started while calls run, and deletes an SFU room no call owns', async () => {
      const w = await world({ graceSeconds: 5, pushes: false });
      aliceJoins(w);
      bobJoins(w);
      w.hs.model.sendState(w.bob, w.roomId, CALL, `_${w.bob}_DEVICEB_m.call`, {});
      w.sfu.connect(w.sfuRoom, legacyLiveKitIdentity(w.bob, 'DEVICEB'));
      w.sfu.connect('orphan-room', 'someone');
      // The bridge never saw any of that: a fresh store, and no pushes.
      const store2 = await makeStore(w.clock);
      w.bridge.appservice.stop();
      await w.bridge.stop();
      const b = await w.start(store2);
      expect((await store2.listMemberships(w.roomId)).map((m) => m.userId)).toEqual([w.alice]);
      expect(w.sfu.rooms.has(w.sfuRoom)).toBe(true);
      expect(w.sfu.calls).toContain(`remove ${w.sfuRoom} ${legacyLiveKitIdentity(w.bob, 'DEVICEB')}`);
      expect(w.sfu.rooms.has('orphan-room')).toBe(true);
      w.clock.advance(5_000);
      await waitFor('orphan deleted', () => !w.sfu.rooms.has('orphan-room'));
      expect(w.sfu.rooms.has(w.sfuRoom)).toBe(true);
      expect(await b.appservice.oracle.isJoined(w.roomId, w.bob)).toBe(true);
    });
  });
}

describe('bridge appservice HTTP edge', () => {
  let b: RunningAppserviceBridge;
  let sfu: RecordingSfu;
  let hs: FakeHomeserver;
  afterEach(async () => {
    await b?.stop();
    await hs?.stop();
  });

  async function setup() {
    const clock = createManualClock(Date.now());
    const reserved = await reservePort();
    const port = reserved.port;
    const reg = testRegistration(`http://127.0.0.1:${port}`);
    hs = await startFakeHomeserver({ registration: reg, clock }).finally(() => reserved.release());
    sfu = createRecordingSfu(clock);
    b = await startAppserviceBridge({ homeserverUrl: hs.url, asToken: reg.as_token, hsToken: reg.hs_token, appserviceId: reg.id, store: createMemoryStore({ clock }), sfu, clock, port });
    return reg;
  }

  it('answers 401 M_UNAUTHORIZED without a token and 403 M_FORBIDDEN with a wrong one; accepts the legacy access_token query', async () => {
    const reg = await setup();
    const url = `${b.url}/_matrix/app/v1/transactions/1`;
    const body = JSON.stringify({ events: [] });
    const none = await fetch(url, { method: 'PUT', body });
    expect(none.status).toBe(401);
    expect(await none.json()).toMatchObject({ errcode: 'M_UNAUTHORIZED' });
    const wrong = await fetch(url, { method: 'PUT', body, headers: { Authorization: 'Bearer nope' } });
    expect(wrong.status).toBe(403);
    expect(await wrong.json()).toMatchObject({ errcode: 'M_FORBIDDEN' });
    const legacy = await fetch(`${url}?access_token=${reg.hs_token}`, { method: 'PUT', body });
    expect(legacy.status).toBe(200);
    expect(await legacy.json()).toEqual({});
  });

  it('answers unknown routes with 404 M_UNRECOGNIZED, user/room queries with 404, and the ping with {}', async () => {
    const reg = await setup();
    const h = { Authorization: `Bearer ${reg.hs_token}` };
    const unknown = await fetch(`${b.url}/_matrix/app/v1/nothing`, { headers: h });
    expect(unknown.status).toBe(404);
    expect(await unknown.json()).toMatchObject({ errcode: 'M_UNRECOGNIZED' });
    expect((await fetch(`${b.url}/_matrix/app/v1/users/@x:localhost`, { headers: h })).status).toBe(404);
    expect((await fetch(`${b.url}/_matrix/app/v1/rooms/%23x:localhost`, { headers: h })).status).toBe(404);
    const ping = await fetch(`${b.url}/_matrix/app/v1/ping`, { method: 'POST', headers: { ...h, 'Content-Type': 'application/json' }, body: '{"transaction_id":"t"}' });
    expect(ping.status).toBe(200);
    expect(await ping.json()).toEqual({});
  });

  it('pings the homeserver at start, which pings back', async () => {
    await setup();
    // The fake homeserver's ping reached us and got {} (else start() would have logged a failure).
    const r = await hs.pusher.ping('again');
    expect(r.status).toBe(200);
  });

  it('never fails a transaction because of one event it cannot understand', async () => {
    const reg = await setup();
    const r = await fetch(`${b.url}/_matrix/app/v1/transactions/5`, {
      method: 'PUT',
      headers: { Authorization: `Bearer ${reg.hs_token}`, 'Content-Type': 'application/json' },
      body: JSON.stringify({ events: [42, { type: CALL }, { type: CALL, room_id: '!r:localhost', sender: '@a:localhost', event_id: '$x', origin_server_ts: 1, state_key: 'garbage', content: {} }] }),
    });
    expect(r.status).toBe(200);
    expect(await r.json()).toEqual({});
  });
});
