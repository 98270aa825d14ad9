/**
 * Test harness for the bridge's appservice half: builds it exactly as bridge/main.ts should
 * (createAppservice + router mounted at APPSERVICE_PREFIX on an express listener) against a
 * given homeserver URL, store and SFU RoomService API, and stops it again. Also a recording
 * in-memory `SfuRoomService` for tests that run before the SFU exists: it keeps rooms and
 * participants and records every call, nothing more.
 */
import { createServer } from 'node:http';
import express from 'express';
import { createMetricsRegistry } from '../../common/metrics.ts';
import { closeServer, listen, urlOf } from '../../common/http.ts';
import type { Clock } from '../../common/clock.ts';
import { createSilentLogger } from '../../common/logger.ts';
import { APPSERVICE_PREFIX, createAppservice, type Appservice } from '../../bridge/appservice/appservice.ts';
import { createAppserviceClient } from '../../bridge/homeserver/client.ts';
import type { SfuRoomService } from '../../bridge/sfu/room-service.ts';
import type { BridgeStore } from '../../bridge/store/store.ts';
import type { Registry } from 'prom-client';

export interface RunningAppserviceBridge {
  url: string;
  appservice: Appservice;
  registry: Registry;
  stop(): Promise<void>;
}

export async function startAppserviceBridge(opts: {
  homeserverUrl: string;
  asToken: string;
  hsToken: string;
  appserviceId?: string;
  serverName?: string;
  store: BridgeStore;
  sfu: SfuRoomService;
  clock: Clock;
  graceSeconds?: number;
  /** The `{}` leave grace (default 10 s, as bridge.yaml). */
  leaveGraceSeconds?: number;
  reconcileIntervalSeconds?: number;
  port?: number;
  /** Start listening but do not call appservice.start() (no ping, no reconcile). */
  skipStart?: boolean;
}): Promise<RunningAppserviceBridge> {
  const registry = createMetricsRegistry({ defaultMetrics: false });
  const appservice = createAppservice({
    hsToken: opts.hsToken,
    appserviceId: opts.appserviceId,
    serverName: opts.serverName ?? 'localhost',
    store: opts.store,
    sfu: opts.sfu,
    homeserver: createAppserviceClient({ baseUrl: opts.homeserverUrl, asToken: opts.asToken }),
    clock: opts.clock,
    logger: createSilentLogger(),
    registry,
    graceSeconds: opts.graceSeconds ?? 30,
    leaveGraceSeconds: opts.leaveGraceSeconds ?? 10,
    reconcileIntervalSeconds: opts.reconcileIntervalSeconds ?? 0,
    txnTtlSeconds: 3600,
  });
  const app = express();
  app.use(APPSERVICE_PREFIX, appservice.router);
  const server = createServer(app);
  const addr = await listen(server, '127.0.0.1', opts.port ?? 0);
  if (!opts.skipStart) await appservice.start();
  return {
    url: urlOf(addr),
    appservice,
    registry,
    async stop() {
      appservice.stop();
      await closeServer(server);
    },
  };
}

export interface RecordingSfu extends SfuRoomService {
  rooms: Map<string, { createdAtMs: number; participants: Map<string, number> }>;
  calls: string[];
  /** Puts a participant in a room (what a client connecting with a token would do). */
  connect(room: string, identity: string, joinedAtMs?: number): void;
  /** While set, removeParticipant waits for this promise. */
  gate?: Promise<void>;
}

export function createRecordingSfu(clock: Clock): RecordingSfu {
  const sfu: RecordingSfu = {
    rooms: new Map(),
    calls: [],
    connect(room, identity, joinedAtMs = 0) {
      let r = sfu.rooms.get(room);
      if (!r) sfu.rooms.set(room, (r = { createdAtMs: clock.now(), participants: new Map() }));
      r.participants.set(identity, joinedAtMs);
    },
    async createRoom(name) {
      sfu.calls.push(`create ${name}`);
      if (!sfu.rooms.has(name)) sfu.rooms.set(name, { createdAtMs: clock.now(), participants: new Map() });
    },
    async deleteRoom(name) {
      sfu.calls.push(`delete ${name}`);
      return sfu.rooms.delete(name) ? 'deleted' : 'absent';
    },
    async listRooms() {
      return [...sfu.rooms].map(([name, r]) => ({ name, createdAtMs: r.createdAtMs, numParticipants: r.participants.size }));
    },
    async listParticipants(name) {
      return [...(sfu.rooms.get(name)?.participants ?? [])].map(([identity, joinedAtMs]) => ({ identity, joinedAtMs }));
    },
    async participantExists(name, identity) {
      return sfu.rooms.get(name)?.participants.has(identity) ?? false;
    },
    async revokePermissions(name, identity) {
      sfu.calls.push(`revoke ${name} ${identity}`);
      return sfu.rooms.get(name)?.participants.has(identity) ? 'updated' : 'absent';
    },
    async removeParticipant(name, identity) {
      if (sfu.gate) await sfu.gate;
      sfu.calls.push(`remove ${name} ${identity}`);
      return sfu.rooms.get(name)?.participants.delete(identity) ? 'removed' : 'absent';
    },
  };
  return sfu;
}
