/**
 * Appservice transactions into the membership tracker (bridge/membership/parse.ts and
 * tracker.ts) with the real in-memory store and a manual clock: Synapse 1.132's recorded
 * pushes with fields replaced by any JSON value, events generated around every call-membership
 * shape (call.member state keys of each form, sticky rtc.member, legacy lists, room members,
 * redactions) with hostile numbers (huge `expires`, negative or fractional timestamps), and
 * arbitrary JSON. Time moves on between transactions so expiry timers fire. Nothing may throw
 * (a throw here fails the homeserver's transaction and makes it retry forever), and the store
 * must stay bounded by the small pools of users, devices and rooms the generator draws from.
 */
import fc from 'fast-check';
import { createManualClock } from '../../../common/clock.ts';
import { createSilentLogger } from '../../../common/logger.ts';
import { createMetricsRegistry } from '../../../common/metrics.ts';
import { createBridgeMetrics } from '../../../bridge/appservice/metrics.ts';
import { createMembershipTracker } from '../../../bridge/membership/tracker.ts';
import { createMemoryStore } from '../../../bridge/store/memory-store.ts';
import { loadTransactions } from '../../fake-homeserver/fixtures.ts';
import { jsonWithReplacedFields, type FuzzTarget } from '../target.ts';

const FLOWS = ['02-alice-joins-call', '03-alice-updates-then-leaves', '04-bob-joins-call-kicked-banned', '05-forged-leave-v10', '06-msc3757-room', '07a-delayed-leave-fires', '08-redaction'];
const ROOMS = ['!a:localhost', '!b:localhost', '!c:remote.example'];
const USERS = ['@alice:localhost', '@bob:localhost', '@eve:remote.example'];
const DEVICES = ['DEVA', 'DEVB', 'D_C'];

function recordedEvents(): Record<string, unknown>[] {
  const out: Record<string, unknown>[] = [];
  for (const flow of FLOWS) {
    for (const push of loadTransactions(flow)) {
      const events = (push.body as { events?: unknown[] } | undefined)?.events ?? [];
      for (const e of events) if (e && typeof e === 'object') out.push(e as Record<string, unknown>);
    }
  }
  return out;
}

const hostileNumber = fc.oneof(
  fc.integer({ min: -1, max: 100_000_000 }),
  fc.constantFrom(0, 3e9, 2 ** 31, 2 ** 53, -(2 ** 31), 1e308, 0.5, 8.64e15),
  fc.double(),
);

function generatedEvent(): fc.Arbitrary<Record<string, unknown>> {
  const user = fc.constantFrom(...USERS);
  const device = fc.constantFrom(...DEVICES);
  const stateKey = fc.oneof(
    fc.tuple(user, device).map(([u, d]) => `_${u}_${d}_m.call`),
    fc.tuple(user, device).map(([u, d]) => `${u}_${d}`),
    fc.tuple(user, device).map(([u, d]) => `_${u}_${d}`),
    user,
    fc.string({ maxLength: 40 }),
  );
  const membershipContent = fc.record(
    {
      application: fc.constantFrom('m.call', 'io.element.other', ''),
      call_id: fc.constantFrom('', 'x'),
      device_id: device,
      expires: hostileNumber,
      created_ts: hostileNumber,
      membershipID: fc.string({ maxLength: 20 }),
      scope: fc.constant('m.room'),
      focus_active: fc.constant({ type: 'livekit', focus_selection: 'oldest_membership' }),
      foci_preferred: fc.constant([]),
    },
    { requiredKeys: [] },
  );
  const legacy = fc.record({
    memberships: fc.array(
      fc.record(
        { device_id: device, expires: hostileNumber, expires_ts: hostileNumber, created_ts: hostileNumber, call_id: fc.constant(''), application: fc.constant('m.call') },
        { requiredKeys: [] },
      ),
      { maxLength: 4 },
    ),
  });
  const base = { room_id: fc.constantFrom(...ROOMS), sender: user, event_id: fc.string({ minLength: 1, maxLength: 12 }).map((s) => `$${s}`), origin_server_ts: hostileNumber };
  const callMember = fc.record({
    ...base,
    type: fc.constant('org.matrix.msc3401.call.member'),
    state_key: stateKey,
    content: fc.oneof(membershipContent, legacy, fc.constant({})),
    unsigned: fc.oneof(fc.constant({}), fc.record({ prev_content: membershipContent })),
  });
  const rtcMember = fc.record({
    ...base,
    type: fc.constant('org.matrix.msc4143.rtc.member'),
    msc4354_sticky: fc.record({ duration_ms: hostileNumber }),
    content: fc.record(
      {
        msc4354_sticky_key: fc.string({ maxLength: 8 }),
        slot_id: fc.constantFrom('m.call#ROOM', 'm.call#', ''),
        member: fc.record({ user_id: user, device_id: device, id: fc.string({ maxLength: 8 }) }, { requiredKeys: [] }),
        rtc_transports: fc.constant([{ type: 'livekit', livekit_service_url: 'https://rtc.example.org' }]),
      },
      { requiredKeys: [] },
    ),
  });
  const roomMember = fc.record({
    ...base,
    type: fc.constant('m.room.member'),
    state_key: user,
    content: fc.record({ membership: fc.constantFrom('join', 'leave', 'ban', 'invite', 'knock', '') }),
  });
  const redaction = fc.record({ ...base, type: fc.constant('m.room.redaction'), redacts: fc.string({ maxLength: 12 }).map((s) => `$${s}`), content: fc.constant({}) });
  return fc.oneof({ weight: 4, arbitrary: callMember }, { weight: 2, arbitrary: rtcMember }, { weight: 2, arbitrary: roomMember }, { weight: 1, arbitrary: redaction });
}

type Input = { events: unknown[]; advanceMs: number };

export const appserviceEvents: FuzzTarget<Input> = {
  name: 'appservice-events',
  description: 'appservice transaction events (recorded Synapse 1.132 pushes mutated, generated membership events) into the membership tracker',
  async: true,
  arbitrary() {
    const event = fc.oneof(
      { weight: 3, arbitrary: generatedEvent() },
      { weight: 2, arbitrary: jsonWithReplacedFields(recordedEvents()) },
      { weight: 1, arbitrary: fc.jsonValue({ maxDepth: 3 }) },
    );
    return fc.record({ events: fc.array(event, { maxLength: 8 }), advanceMs: fc.integer({ min: 0, max: 6 * 3_600_000 }) });
  },
  async setup() {
    const clock = createManualClock();
    const store = createMemoryStore({ clock });
    const tracker = createMembershipTracker({ store, clock, logger: createSilentLogger(), metrics: createBridgeMetrics(createMetricsRegistry()), leaveGraceMs: 10_000, rememberLeavesMs: 3_600_000 });
    let joins = 0;
    let leaves = 0;
    tracker.setListener({
      async joined() {
        joins++;
      },
      async left() {
        leaves++;
      },
      async roomLost() {
        leaves++;
      },
    });
    await tracker.start();
    return {
      async one({ events, advanceMs }) {
        await tracker.applyEvents(events);
        clock.advance(advanceMs);
        // Let expiry work queued by the timers run before the next transaction.
        await new Promise<void>((r) => setImmediate(r));
        let tracked = 0;
        for (const room of await store.listCallRooms()) tracked += (await store.listMemberships(room)).length;
        const bound = ROOMS.length * USERS.length * (DEVICES.length * 4 + 64);
        if (tracked > bound) throw new Error(`tracker holds ${tracked} memberships, more than the ${bound} the inputs can name`);
        if (clock.pending() > bound + 16) throw new Error(`${clock.pending()} timers pending for ${tracked} memberships`);
      },
      expected: () => false,
      async teardown() {
        tracker.stop();
        await store.close();
      },
      stats: () => ({ joins, leaves }),
    };
  },
};
