/**
 * The membership tracker's expiry on the injected clock, for the lifetimes parse.ts bounds: a
 * sticky rtc.member join (contents from matrix-js-sdk's StickyEventMembershipManager, serialised
 * as the fake homeserver pushes them) ends when its sticky duration passes without a refresh, a
 * refresh moves the end, and a session membership claiming `expires: 3e9` ends after 24 h on one
 * timer instead of never.
 */
import { beforeAll, describe, expect, it } from 'vitest';
import { Registry } from 'prom-client';
import { createManualClock, type ManualClock } from '../../common/clock.ts';
import { createSilentLogger } from '../../common/logger.ts';
import { formatEvent } from '../../test/fake-homeserver/event-format.ts';
import { generateStickyContents, type GeneratedStickyContents, type SentByManager } from '../../test/support/matrixrtc-sticky.ts';
import { createBridgeMetrics } from '../appservice/metrics.ts';
import { createMemoryStore } from '../store/memory-store.ts';
import { createMembershipTracker, type MembershipEnded, type MembershipTracker } from './tracker.ts';
import { MAX_MEMBERSHIP_LIFETIME_MS, MAX_STICKY_MS } from './parse.ts';

const ROOM = '!call:localhost';
const ALICE = '@alice:localhost';

let js: GeneratedStickyContents;
beforeAll(async () => {
  js = await generateStickyContents(ALICE, 'DEVICEA', ROOM, '$join');
});

function world(): { clock: ManualClock; tracker: MembershipTracker; joined: string[]; left: MembershipEnded[] } {
  const clock = createManualClock();
  const store = createMemoryStore({ clock });
  const tracker = createMembershipTracker({ store, clock, logger: createSilentLogger(), metrics: createBridgeMetrics(new Registry(), store), leaveGraceMs: 0, rememberLeavesMs: 3_600_000 });
  const joined: string[] = [];
  const left: MembershipEnded[] = [];
  tracker.setListener({
    joined: async (m) => void joined.push(m.eventId),
    left: async (e) => void left.push(e),
    roomLost: async () => {},
  });
  return { clock, tracker, joined, left };
}

/** The sticky event as the fake homeserver pushes it, sent now. */
const pushedNow = (clock: ManualClock, s: SentByManager, eventId: string) =>
  formatEvent({ event_id: eventId, type: s.type!, room_id: ROOM, sender: ALICE, origin_server_ts: clock.now(), content: s.content!, sticky: { duration_ms: s.stickyDurationMs! } }, clock.now());

/** Lets the tracker's queued expiry run after a timer fired. */
const settle = () => new Promise((r) => setTimeout(r, 0));

describe('membership expiry on the injected clock', () => {
  it('a js-sdk sticky join ends when its sticky duration passes without a refresh', async () => {
    const { clock, tracker, joined, left } = world();
    await tracker.start();
    await tracker.applyEvents([pushedNow(clock, js.join, '$join')]);
    expect(joined).toEqual(['$join']);
    const joinedAt = clock.now();
    clock.advance(MAX_STICKY_MS - 1);
    await settle();
    expect(left).toEqual([]);
    clock.advance(1);
    await settle();
    await tracker.queue.run(ROOM, async () => undefined);
    expect(left).toMatchObject([{ reason: 'expired', at: joinedAt + MAX_STICKY_MS, membership: { key: `sticky:${ALICE}:${js.memberId}`, memberId: js.memberId } }]);
    tracker.stop();
  });

  it('a js-sdk refresh before the end moves it by the sticky duration', async () => {
    const { clock, tracker, left } = world();
    await tracker.start();
    await tracker.applyEvents([pushedNow(clock, js.join, '$join')]);
    clock.advance(55 * 60 * 1000);
    const refreshedAt = clock.now();
    await tracker.applyEvents([pushedNow(clock, js.refresh, '$refresh')]);
    clock.advance(MAX_STICKY_MS - 55 * 60 * 1000 + 1);
    await settle();
    expect(left).toEqual([]);
    clock.advance(refreshedAt + MAX_STICKY_MS - clock.now());
    await settle();
    await tracker.queue.run(ROOM, async () => undefined);
    expect(left).toMatchObject([{ reason: 'expired', at: refreshedAt + MAX_STICKY_MS }]);
    tracker.stop();
  });

  it('a session membership claiming expires 3e9 ends after 24 h, on one timer', async () => {
    const { clock, tracker, left } = world();
    await tracker.start();
    const sentAt = clock.now();
    await tracker.applyEvents([
      {
        type: 'org.matrix.msc3401.call.member',
        room_id: ROOM,
        sender: ALICE,
        event_id: '$big',
        origin_server_ts: sentAt,
        state_key: `_${ALICE}_DEVICEA_m.call`,
        content: { application: 'm.call', call_id: '', scope: 'm.room', device_id: 'DEVICEA', membershipID: `${ALICE}:DEVICEA`, expires: 3e9 },
      },
    ]);
    expect(clock.pending()).toBe(1);
    clock.advance(MAX_MEMBERSHIP_LIFETIME_MS);
    await settle();
    await tracker.queue.run(ROOM, async () => undefined);
    expect(left).toMatchObject([{ reason: 'expired', at: sentAt + MAX_MEMBERSHIP_LIFETIME_MS }]);
    expect(clock.pending()).toBe(0);
    tracker.stop();
  });
});
