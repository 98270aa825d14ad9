/**
 * A Matrix 2.0 call member driven by matrix-js-sdk's own MatrixRTC code, so tests see exactly the
 * sticky `org.matrix.msc4143.rtc.member` events Element Call's `matrix_2_0` mode sends instead of
 * hand-written JSON: `StickyEventMembershipManager` (lib/matrixrtc/MembershipManager.js) schedules
 * the delayed sticky leave, sends the sticky join with `?org.matrix.msc4354.sticky_duration_ms`,
 * refreshes it (with an `m.relation` to its previous event once told about it), and on hang-up
 * sends the delayed leave (or, if that is gone, the plain sticky leave). The client is either
 * a real `MatrixClient` talking to the fake homeserver, or `recordingStickyClient()`, which
 * records what the manager asks to send and answers as a homeserver would (unit tests).
 * Lifecycle: `startStickyMember(...)` → `join()` → `leave()` → `stop()` (always; it stops the
 * manager's timers and the client).
 */
import { randomUUID } from 'node:crypto';
import { createClient, MatrixError, MatrixEvent, type MatrixClient } from 'matrix-js-sdk';
import type { Logger } from 'matrix-js-sdk/lib/logger.js';
import { CallMembership } from 'matrix-js-sdk/lib/matrixrtc/CallMembership.js';
import { StickyEventMembershipManager } from 'matrix-js-sdk/lib/matrixrtc/MembershipManager.js';
import type { MembershipConfig } from 'matrix-js-sdk/lib/matrixrtc/MatrixRTCSession.js';
import type { Transport } from 'matrix-js-sdk/lib/matrixrtc/types.js';

export const RTC_MEMBER = 'org.matrix.msc4143.rtc.member';

/** What the manager asked the client to send. */
export interface SentByManager {
  kind: 'sticky' | 'delayed_sticky' | 'delayed_action';
  roomId: string;
  type?: string;
  content?: Record<string, unknown>;
  stickyDurationMs?: number;
  delayMs?: number;
  /** For `delayed_action`: `<delay id>:<action>`. */
  action?: string;
}

const unexpected = (name: string) => () => Promise.reject(new Error(`the sticky membership manager should not call ${name}`));

type ManagerClient = ConstructorParameters<typeof StickyEventMembershipManager>[2];

export interface RecordingStickyClient {
  client: ManagerClient;
  sent: SentByManager[];
}

/**
 * A stand-in for the parts of MatrixClient the manager uses, recording every send. Event ids and
 * delay ids are made up; delayed-event actions succeed, except `send` with `delayedLeaveGone`
 * (404 M_NOT_FOUND, as when the homeserver already fired it), which makes the manager send its
 * own sticky leave instead.
 */
export function recordingStickyClient(userId: string, deviceId: string, opts: { delayedLeaveGone?: boolean } = {}): RecordingStickyClient {
  const sent: SentByManager[] = [];
  let n = 0;
  const action = (name: string) => async (delayId: string) => {
    sent.push({ kind: 'delayed_action', roomId: '', action: `${delayId}:${name}` });
    if (name === 'send' && opts.delayedLeaveGone) throw new MatrixError({ errcode: 'M_NOT_FOUND', error: 'Delayed event not found' }, 404);
    return {};
  };
  const client = {
    getUserId: () => userId,
    getDeviceId: () => deviceId,
    sendStateEvent: unexpected('sendStateEvent'),
    _unstable_sendDelayedStateEvent: unexpected('_unstable_sendDelayedStateEvent'),
    _unstable_updateDelayedEvent: unexpected('_unstable_updateDelayedEvent'),
    _unstable_cancelScheduledDelayedEvent: action('cancel'),
    _unstable_restartScheduledDelayedEvent: action('restart'),
    _unstable_sendScheduledDelayedEvent: action('send'),
    async _unstable_sendStickyEvent(roomId: string, stickyDurationMs: number, _thread: unknown, type: string, content: Record<string, unknown>) {
      sent.push({ kind: 'sticky', roomId, type, content: structuredClone(content), stickyDurationMs });
      return { event_id: `$sticky${++n}` };
    },
    async _unstable_sendStickyDelayedEvent(roomId: string, stickyDurationMs: number, delayOpts: { delay: number }, _thread: unknown, type: string, content: Record<string, unknown>) {
      sent.push({ kind: 'delayed_sticky', roomId, type, content: structuredClone(content), stickyDurationMs, delayMs: delayOpts.delay });
      return { delay_id: `syd_${++n}` };
    },
  };
  return { client: client as unknown as ManagerClient, sent };
}

export interface StickyMemberOptions {
  client: ManagerClient;
  roomId: string;
  /** `member.id` (Element Call: a fresh UUID per join); default a random UUID. */
  memberId?: string;
  /** Our transport (`rtc_transports` / `transports.published`). */
  transport?: Transport;
  config?: MembershipConfig;
  roomVersion?: string;
}

export interface StickyMember {
  readonly manager: StickyEventMembershipManager;
  readonly memberId: string;
  join(): void;
  /** Resolves once the manager has left (true) or gave up after `timeoutMs` (false). */
  leave(timeoutMs?: number): Promise<boolean>;
  /** Tells the manager its own membership as a client would see it (for the refresh's relation). */
  sawOwnEvent(ev: Record<string, unknown>): Promise<CallMembership>;
  stop(): Promise<void>;
}

/** js-sdk logs every scheduler step at debug level; tests keep their output for failures. */
export const quietLogger: Logger = {
  getChild: () => quietLogger,
  trace: () => undefined,
  debug: () => undefined,
  info: () => undefined,
  warn: () => undefined,
  error: (...args: unknown[]) => console.error('[matrix-js-sdk]', ...args),
};

export function startStickyMember(opts: StickyMemberOptions): StickyMember {
  const memberId = opts.memberId ?? randomUUID();
  const room = { roomId: opts.roomId, getVersion: () => opts.roomVersion ?? '10' };
  const manager = new StickyEventMembershipManager(
    { delayedLeaveEventDelayMs: 10_000, ...opts.config, unstableSendStickyEvents: true },
    room as ConstructorParameters<typeof StickyEventMembershipManager>[1],
    opts.client,
    { application: 'm.call', id: 'ROOM' },
    memberId,
    quietLogger,
  );
  const transport: Transport = opts.transport ?? { type: 'livekit', livekit_service_url: 'https://rtc.example.org/livekit/jwt' };
  return {
    manager,
    memberId,
    join: () => manager.join([], transport),
    leave: (timeoutMs = 10_000) => manager.leave(timeoutMs),
    async sawOwnEvent(ev) {
      const membership = await CallMembership.parseFromEvent(new MatrixEvent(ev));
      await manager.onRTCSessionMemberUpdate([membership]);
      return membership;
    },
    async stop() {
      if (manager.isActivated()) await manager.leave(2_000).catch(() => false);
    },
  };
}

/** A real MatrixClient for `userId` on `baseUrl` (no sync: the manager only sends). */
export function matrixClientFor(baseUrl: string, userId: string, deviceId: string, accessToken: string): MatrixClient {
  return createClient({ baseUrl, userId, deviceId, accessToken, logger: quietLogger });
}

export interface GeneratedStickyContents {
  memberId: string;
  delayedLeave: SentByManager;
  join: SentByManager;
  /** The first refresh, sent after the manager was told about the join as `joinEventId`. */
  refresh: SentByManager;
}

/**
 * Runs a StickyEventMembershipManager against the recording client until it has scheduled its
 * delayed leave, joined and refreshed once (a short expiry makes it refresh within ~0.5 s), then
 * hangs up. Real timers: js-sdk schedules with Date.now and setTimeout.
 */
export async function generateStickyContents(userId: string, deviceId: string, roomId: string, joinEventId = '$join'): Promise<GeneratedStickyContents> {
  const rec = recordingStickyClient(userId, deviceId);
  const member = startStickyMember({ client: rec.client, roomId, config: { membershipEventExpiryMs: 1500, membershipEventExpiryHeadroomMs: 1000 } });
  try {
    member.join();
    const stickies = () => rec.sent.filter((s) => s.kind === 'sticky');
    const deadline = Date.now() + 5_000;
    while (stickies().length < 1 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 5));
    const join = stickies()[0];
    if (!join) throw new Error('the manager sent no sticky join');
    await member.sawOwnEvent({ type: join.type, room_id: roomId, sender: userId, event_id: joinEventId, origin_server_ts: Date.now(), content: join.content, msc4354_sticky: { duration_ms: join.stickyDurationMs } });
    while (stickies().length < 2 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 5));
    const refresh = stickies()[1];
    if (!refresh) throw new Error('the manager sent no refresh');
    return { memberId: member.memberId, delayedLeave: rec.sent.find((s) => s.kind === 'delayed_sticky')!, join, refresh };
  } finally {
    await member.stop();
  }
}
