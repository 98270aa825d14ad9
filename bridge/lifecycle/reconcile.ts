/**
 * Recovery: compares the homeserver's current room state (read through the client-server API as
 * the appservice masquerading as a joined local user: the bot is in no room, and Synapse answers
 * 403 to its `/state` but lets it list `joined_members`) and the
 * SFU's rooms and participants with what the bridge tracks, and repairs drift: adopts memberships
 * it missed, drops memberships that ended while it was away, creates missing SFU rooms, removes
 * participants no membership owns (once they have been connected longer than the grace period, so
 * a client that fetched its token just before announcing itself is left alone) and deletes SFU
 * rooms no call owns (after the grace period). A room whose state could not be read is left
 * exactly as it is; unmapped SFU rooms are kept when room discovery was incomplete. Runs at start
 * and every `intervalSeconds` on the injected clock; one pass at a time.
 */
import type { Clock, TimerHandle } from '../../common/clock.ts';
import type { Logger } from '../../common/logger.ts';
import type { BridgeMetrics } from '../appservice/metrics.ts';
import { HomeserverError, type AppserviceClient } from '../homeserver/client.ts';
import { interpretEvent, asMatrixEvent } from '../membership/parse.ts';
import type { MembershipTracker } from '../membership/tracker.ts';
import type { BridgeStore, CallMembership } from '../store/store.ts';
import { LEGACY_SLOT_ID, liveKitRoomAlias } from '../token/names.ts';
import { identitiesFor, sfuRoomOf, userOfLegacyIdentity, type RoomLifecycle } from './lifecycle.ts';
import type { SfuParticipantInfo, SfuRoomService, SfuRoomInfo } from '../sfu/room-service.ts';

export interface ReconcileReport {
  outcome: 'ok' | 'partial' | 'failed';
  roomsChecked: number;
  roomsUncertain: string[];
  adopted: number;
  dropped: number;
  participantsRemoved: number;
  roomsCreated: number;
  orphansScheduled: number;
}

export interface Reconciler {
  run(): Promise<ReconcileReport>;
  start(): Promise<ReconcileReport>;
  stop(): void;
}

export interface ReconcilerDeps {
  store: BridgeStore;
  tracker: MembershipTracker;
  lifecycle: RoomLifecycle;
  sfu: SfuRoomService;
  homeserver: AppserviceClient;
  clock: Clock;
  logger: Logger;
  metrics: BridgeMetrics;
  /** The homeserver's name: only its users can be masqueraded as. */
  serverName: string;
  graceSeconds: number;
  intervalSeconds: number;
  /** Upper bound of users whose `/joined_rooms` is read per pass. */
  maxUsersProbed?: number;
}

/** Memberships that count according to a room's full state: owner-checked, unexpired, user joined. */
export function membershipsFromState(state: unknown[], now: number): CallMembership[] {
  const joined = new Set<string>();
  for (const raw of state) {
    const ev = asMatrixEvent(raw);
    if (ev?.type === 'm.room.member' && ev.state_key && ev.content.membership === 'join') joined.add(ev.state_key);
  }
  const out: CallMembership[] = [];
  for (const raw of state) {
    const i = interpretEvent(raw, now);
    const list = i.kind === 'join' ? [i.membership] : i.kind === 'legacy_list' ? i.memberships : [];
    for (const m of list) if (joined.has(m.userId) && m.expiresAt > now) out.push(m);
  }
  return out;
}

function emptyReport(outcome: ReconcileReport['outcome']): ReconcileReport {
  return { outcome, roomsChecked: 0, roomsUncertain: [], adopted: 0, dropped: 0, participantsRemoved: 0, roomsCreated: 0, orphansScheduled: 0 };
}

export function createReconciler(deps: ReconcilerDeps): Reconciler {
  const { store, tracker, lifecycle, sfu, homeserver, clock, logger, metrics } = deps;
  const log = logger.child({ component: 'reconcile' });
  let timer: TimerHandle | undefined;
  let running: Promise<ReconcileReport> | undefined;
  let stopped = false;

  const isLocal = (userId: string) => userId.endsWith(`:${deps.serverName}`);

  /**
   * Room state as a joined local user (`?user_id=`), found with `joined_members`, which Synapse
   * answers the appservice for any room with a member in its namespace. Never as the bot itself,
   * which joins no room (Synapse: 403 "not in room"). Throws HomeserverError when unknown.
   */
  async function readState(roomId: string): Promise<unknown[]> {
    const local = (await homeserver.joinedMembers(roomId)).find(isLocal);
    if (!local) throw new HomeserverError(403, 'M_FORBIDDEN', `no local user joined to ${roomId} to read its state as`);
    return await homeserver.roomState(roomId, local);
  }

  async function pass(): Promise<ReconcileReport> {
    const report = emptyReport('ok');
    let discoveryComplete = true;
    // Pending leaves and deletions a sibling replica stored and did not finish (it died).
    await tracker.resumePendingLeaves();
    await lifecycle.resumeDeletions();

    let sfuRooms: SfuRoomInfo[] | undefined;
    try {
      sfuRooms = await sfu.listRooms();
    } catch (err) {
      log.error({ err: (err as Error).message }, 'cannot list SFU rooms; reconciling memberships only');
    }
    const participants = new Map<string, SfuParticipantInfo[]>();
    for (const r of sfuRooms ?? []) {
      try {
        participants.set(r.name, await sfu.listParticipants(r.name));
      } catch (err) {
        log.error({ err: (err as Error).message, sfuRoom: r.name }, 'cannot list SFU participants');
      }
    }

    // Which Matrix rooms to look at: everything we know of, and the rooms of users seen in the SFU.
    const candidates = new Set<string>([...(await store.listKnownRooms()), ...(await store.listCallRooms())]);
    for (const r of sfuRooms ?? []) {
      const b = await store.lookupSfuRoom(r.name);
      if (b) candidates.add(b.roomId);
    }
    const users = new Set<string>();
    for (const ps of participants.values()) {
      for (const p of ps) {
        const u = userOfLegacyIdentity(p.identity);
        if (u && isLocal(u)) users.add(u);
      }
    }
    const probe: (string | undefined)[] = [undefined, ...[...users].slice(0, deps.maxUsersProbed ?? 200)];
    for (const u of probe) {
      try {
        for (const roomId of await homeserver.joinedRooms(u)) candidates.add(roomId);
      } catch (err) {
        discoveryComplete = false;
        log.warn({ err: (err as Error).message, asUser: u }, 'cannot list joined rooms');
      }
    }

    /** SFU room name -> identities of the memberships that own it (only for rooms read fine). */
    const owned = new Map<string, Set<string>>();
    /** SFU room names of Matrix rooms whose state we could not read: never touched. */
    const uncertainNames = new Set<string>();

    for (const roomId of candidates) {
      report.roomsChecked++;
      try {
        await tracker.inRoom(roomId, async () => {
          const state = await readState(roomId);
          /** user -> their m.room.member event, for memberships that end because the user left the room. */
          const roomMembers = new Map<string, { membership: string; at: number }>();
          for (const raw of state) {
            const ev = asMatrixEvent(raw);
            if (ev?.type === 'm.room.member' && ev.state_key && typeof ev.content.membership === 'string') {
              await store.setRoomMember(roomId, ev.state_key, ev.content.membership);
              roomMembers.set(ev.state_key, { membership: ev.content.membership, at: ev.origin_server_ts });
            }
          }
          await store.addKnownRoom(roomId);
          const desired = membershipsFromState(state, clock.now());
          const tracked = new Map((await store.listMemberships(roomId)).map((m) => [m.key, m]));
          const desiredKeys = new Set(desired.map((m) => m.key));
          for (const m of tracked.values()) {
            if (desiredKeys.has(m.key)) continue;
            const member = roomMembers.get(m.userId);
            // Sticky (MSC4354) memberships are not room state: they end by their leave or their
            // expiry, or when their user leaves the room (the state read above).
            if (m.source === 'sticky' && (member?.membership ?? (await store.getRoomMember(roomId, m.userId))) === 'join') continue;
            const lost = member && (member.membership === 'leave' || member.membership === 'ban')
              ? { reason: member.membership === 'ban' ? ('ban' as const) : ('room_leave' as const), at: member.at }
              : undefined;
            if (await tracker.drop(roomId, m.key, lost)) {
              report.dropped++;
              metrics.reconcileRepairs.inc({ action: 'drop_membership' });
            }
          }
          for (const m of desired) {
            const t = tracked.get(m.key);
            if (!t || t.eventId !== m.eventId) {
              await tracker.adopt(m);
              if (!t) {
                report.adopted++;
                metrics.reconcileRepairs.inc({ action: 'adopt_membership' });
              }
            }
          }
          // What is tracked now owns its participants: the desired memberships, and those whose
          // leave still waits for its grace (their participant must not be removed here either).
          for (const m of await store.listMemberships(roomId)) {
            const name = sfuRoomOf(m);
            let set = owned.get(name);
            if (!set) owned.set(name, (set = new Set()));
            for (const id of identitiesFor(m)) set.add(id);
          }
        });
      } catch (err) {
        report.roomsUncertain.push(roomId);
        uncertainNames.add(liveKitRoomAlias(roomId, LEGACY_SLOT_ID));
        for (const m of await store.listMemberships(roomId)) uncertainNames.add(sfuRoomOf(m));
        log.warn({ err: (err as Error).message, roomId }, 'cannot read room state; leaving this room unchanged');
      }
    }

    if (sfuRooms) {
      const present = new Set(sfuRooms.map((r) => r.name));
      for (const name of owned.keys()) {
        if (!present.has(name)) {
          await sfu.createRoom(name).then(
            () => {
              report.roomsCreated++;
              metrics.reconcileRepairs.inc({ action: 'create_room' });
            },
            (err: unknown) => log.error({ err: (err as Error).message, sfuRoom: name }, 'cannot create SFU room'),
          );
        }
      }
      const graceMs = deps.graceSeconds * 1000;
      for (const r of sfuRooms) {
        if (uncertainNames.has(r.name)) continue;
        const allowed = owned.get(r.name);
        const binding = await store.lookupSfuRoom(r.name);
        if (!allowed) {
          if (!binding && !discoveryComplete) continue;
          if (!(await store.listRoomDeletions()).has(r.name)) {
            await lifecycle.scheduleDelete(r.name, binding?.roomId);
            report.orphansScheduled++;
            metrics.reconcileRepairs.inc({ action: 'schedule_orphan_delete' });
          }
          continue;
        }
        for (const p of participants.get(r.name) ?? []) {
          if (allowed.has(p.identity)) continue;
          if (p.joinedAtMs && clock.now() - p.joinedAtMs < graceMs) continue;
          try {
            if ((await sfu.removeParticipant(r.name, p.identity)) === 'removed') {
              report.participantsRemoved++;
              metrics.reconcileRepairs.inc({ action: 'remove_participant' });
            }
          } catch (err) {
            log.error({ err: (err as Error).message, sfuRoom: r.name }, 'cannot remove stale participant');
          }
        }
      }
    }

    report.outcome = !sfuRooms || report.roomsUncertain.length || !discoveryComplete ? 'partial' : 'ok';
    metrics.reconcileRuns.inc({ outcome: report.outcome });
    log.info({ ...report, roomsUncertain: report.roomsUncertain.length }, 'reconcile pass done');
    return report;
  }

  async function run(): Promise<ReconcileReport> {
    if (running) return await running;
    running = pass().catch((err: unknown) => {
      metrics.reconcileRuns.inc({ outcome: 'failed' });
      log.error({ err }, 'reconcile pass failed; nothing more was changed');
      return emptyReport('failed');
    });
    try {
      return await running;
    } finally {
      running = undefined;
    }
  }

  function schedule(): void {
    if (stopped || deps.intervalSeconds <= 0) return;
    timer = clock.setTimeout(() => {
      void run().finally(schedule);
    }, deps.intervalSeconds * 1000);
  }

  return {
    run,
    async start() {
      stopped = false;
      const r = await run();
      schedule();
      return r;
    },
    stop() {
      stopped = true;
      clock.clearTimeout(timer);
    },
  };
}
