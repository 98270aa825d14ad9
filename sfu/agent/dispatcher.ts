/**
 * Agent dispatch for the rooms of this node, after LiveKit server (livekit pkg/rtc/room.go
 * agent dispatches, pkg/service/agentservice.go worker registry, pkg/agent/client.go): keeps
 * the registered workers of this node and each room's dispatches with their jobs, and turns
 * the room manager's events into jobs. A room that starts gets the dispatches its creator
 * configured (`roomConfig.agents` from the creating participant's token, or CreateRoom's
 * `agents`), else one dispatch without an agent name, which every worker registered without a
 * name serves (automatic dispatch). `AgentDispatchService` adds and removes dispatches at any
 * time. A job goes to one worker registered for its agent name, chosen at random weighted by
 * spare load (1 - load) among those reporting available; a worker that declines or does not
 * answer is skipped for the next. When an agent participant leaves, its job is terminated
 * (failed, "agent worker left the room") unless its worker disconnects within
 * AGENT_LEFT_SETTLE_MS (a crashed host); when its room finishes, its jobs end. When a worker's
 * connection ends its running jobs are offered again (`resuming`) to another worker of the
 * same name, and end failed when there is none (LiveKit OSS only forgets them).
 * Everything is per node and driven by the local room manager's events, so with a cluster
 * dispatch runs where the room is hosted. Built by `createAgentDispatcher(deps)`; the agent
 * WebSocket edge calls `openWorker`, the Twirp edge the `AgentDispatchBackend` methods;
 * `close()` ends every worker connection.
 */
import {
  AgentDispatch,
  AgentDispatchState,
  CreateRoomRequest,
  DisconnectReason,
  Job,
  JobState,
  JobStatus,
  JobType,
  RegisterWorkerResponse,
  RoomAgentDispatch,
  ServerInfo,
  ServerInfo_Edition,
  ServerMessage,
  WorkerStatus,
  type Room as RoomInfo,
  type WorkerMessage,
} from '@livekit/protocol';
import type { Clock, TimerHandle } from '../../common/clock.ts';
import type { Logger } from '../../common/logger.ts';
import type { SfuConfig } from '../config.ts';
import { RoomServiceError, type RoomServiceBackend, type SfuEvent, type SfuEventSource } from '../room-service-api.ts';
import { LIMIT_ERRORS, participantFieldOverLimit } from '../rtc/limits.ts';
import { PROTOCOL_VERSION, SERVER_VERSION } from '../rtc/room.ts';
import { ROOM_NOT_FOUND } from '../rtc/room-manager.ts';
import type { AgentMetrics, JobOutcome } from './metrics.ts';
import {
  AgentWorker,
  WorkerProtocolError,
  jobEnded,
  newAgentId,
  pong,
  registrationOf,
  type WorkerLink,
} from './worker.ts';

/** pkg/agent worker.go RegisterTimeout. */
export const REGISTER_TIMEOUT_MS = 10_000;
/** pkg/agent CurrentProtocol. */
export const AGENT_PROTOCOL = 1;
/** How long a deleted dispatch's agent may take to leave before it is removed (room.go: 3 s). */
export const AGENT_LEAVE_GRACE_MS = 3_000;
/**
 * How long after its agent left a job waits before ending as "agent worker left the room": a
 * crashed worker host drops the worker's connection and its job's room connection together, in
 * either order, and the job should then move to another worker rather than end.
 */
export const AGENT_LEFT_SETTLE_MS = 2_000;

/** The AgentDispatchService contract (livekit_agent_dispatch.proto) the Twirp edge calls. */
export interface AgentDispatchBackend {
  createDispatch(req: { room: string; agentName: string; metadata: string }): Promise<AgentDispatch>;
  deleteDispatch(room: string, dispatchId: string): Promise<AgentDispatch>;
  /** All dispatches of the room, or the one with `dispatchId` (none when unknown). */
  listDispatch(room: string, dispatchId: string): Promise<AgentDispatch[]>;
}

/** The edge's handle on one worker connection. */
export interface WorkerSession {
  /** A decoded WorkerMessage; throws WorkerProtocolError, upon which the edge closes. */
  handle(msg: WorkerMessage): void;
  /** The connection ended (either side). */
  closed(): void;
}

export interface AgentDispatcher extends AgentDispatchBackend {
  /** A connection authenticated with an `agent` grant signed by `apiKey`. */
  openWorker(link: WorkerLink, apiKey: string): WorkerSession;
  /** Registered workers (for tests and metrics): id, agent name, running job count. */
  workers(): { id: string; agentName: string; jobs: number }[];
  close(): void;
}

export interface AgentDispatcherDeps {
  rooms: SfuEventSource &
    Pick<RoomServiceBackend, 'createRoom' | 'removeParticipant'> & { getRoom(name: string): { toInfo(): RoomInfo } | undefined };
  config: Pick<SfuConfig, 'room' | 'limit' | 'keys'>;
  clock: Clock;
  logger: Logger;
  nodeId?: string;
  metrics?: AgentMetrics;
}

interface JobRecord {
  job: Job;
  room: string;
  dispatchId: string;
  worker: AgentWorker | undefined;
  /** When the current worker was assigned (ms): an agent session older than that was the previous worker's. */
  assignedAtMs: number;
}

const workerKey = (jobType: JobType, namespace: string, agentName: string) => `${jobType}\u0000${namespace}\u0000${agentName}`;
const participantKey = (room: string, identity: string) => `${room}\u0000${identity}`;
const nanos = (ms: number) => BigInt(ms) * 1_000_000n;
const snapshot = (d: AgentDispatch) => d.clone();

export function createAgentDispatcher(deps: AgentDispatcherDeps): AgentDispatcher {
  const { clock, config } = deps;
  const log = deps.logger.child({ component: 'agents' });
  const serverInfo = new ServerInfo({
    edition: ServerInfo_Edition.Standard,
    version: SERVER_VERSION,
    protocol: PROTOCOL_VERSION,
    agentProtocol: AGENT_PROTOCOL,
    nodeId: deps.nodeId ?? '',
  });
  const workers = new Map<string, AgentWorker>();
  const byKey = new Map<string, AgentWorker[]>();
  /** room name -> dispatch id -> dispatch (its state.jobs are the JobRecords' jobs). */
  const dispatches = new Map<string, Map<string, AgentDispatch>>();
  const jobs = new Map<string, JobRecord>();
  /** room + agent participant identity -> job id. */
  const agentParticipants = new Map<string, string>();
  /** Pending agent removals and agent-left settles, cleared by close(). */
  const timers = new Set<TimerHandle>();
  const later = (ms: number, fn: () => void) => {
    const t = clock.setTimeout(() => {
      timers.delete(t);
      fn();
    }, ms);
    timers.add(t);
  };
  let closed = false;
  const count = (outcome: JobOutcome) => deps.metrics?.jobs.inc({ outcome });

  function select(key: string, tried: Set<AgentWorker>): AgentWorker | undefined {
    const candidates = (byKey.get(key) ?? []).filter(
      (w) => !tried.has(w) && !w.isClosed && w.status === WorkerStatus.WS_AVAILABLE,
    );
    const weights = candidates.map((w) => Math.max(0, 1 - w.load));
    const sum = weights.reduce((a, b) => a + b, 0);
    if (sum === 0) return undefined;
    let pick = Math.random() * sum;
    for (let i = 0; i < candidates.length; i++) {
      pick -= weights[i]!;
      if (pick <= 0) return candidates[i];
    }
    return candidates[candidates.length - 1];
  }

  function recordJob(room: string, dispatch: AgentDispatch, job: Job, worker: AgentWorker | undefined): void {
    const list = (dispatch.state ??= new AgentDispatchState()).jobs;
    const at = list.findIndex((j) => j.id === job.id);
    if (at >= 0) list[at] = job;
    else list.push(job);
    jobs.set(job.id, { job, room, dispatchId: dispatch.id, worker, assignedAtMs: clock.now() });
    const identity = job.state?.participantIdentity;
    if (identity && worker) agentParticipants.set(participantKey(room, identity), job.id);
  }

  /** LiveKit's AgentHandler.JobRequest: offer the job to workers until one takes it. */
  async function offer(room: string, dispatch: AgentDispatch, job: Job, resuming: boolean, skip?: AgentWorker): Promise<boolean> {
    const key = workerKey(job.type, job.namespace, job.agentName);
    const tried = new Set<AgentWorker>(skip ? [skip] : []);
    for (let w = select(key, tried); w; w = select(key, tried)) {
      tried.add(w);
      const assigned = await w.assign(job, resuming);
      if (!assigned) {
        log.warn({ jobId: job.id, workerId: w.id, room }, 'failed to assign job to worker');
        continue;
      }
      // The room or the dispatch went away while the worker was answering.
      if (dispatches.get(room)?.get(dispatch.id) !== dispatch) {
        if (assigned.state?.status === JobStatus.JS_RUNNING) w.terminate(job.id, JobStatus.JS_SUCCESS);
        return true;
      }
      recordJob(room, dispatch, assigned, assigned.state?.status === JobStatus.JS_RUNNING ? w : undefined);
      count(resuming ? 'resumed' : 'assigned');
      log.info({ jobId: job.id, workerId: w.id, room, agentName: job.agentName, resuming }, 'assigned job to worker');
      return true;
    }
    return false;
  }

  function launch(room: RoomInfo, dispatch: AgentDispatch): void {
    const job = new Job({
      id: newAgentId('AJ_'),
      dispatchId: dispatch.id,
      type: JobType.JT_ROOM,
      room: room.clone(),
      namespace: '',
      agentName: dispatch.agentName,
      metadata: dispatch.metadata,
      state: new JobState({ status: JobStatus.JS_PENDING }),
    });
    void offer(room.name, dispatch, job, false).then(
      (ok) => {
        if (ok) return;
        count('no_worker');
        log.info({ room: room.name, agentName: dispatch.agentName }, 'not dispatching agent job since no worker is available');
      },
      (err: unknown) => log.error({ err, room: room.name }, 'agent job launch failed'),
    );
  }

  function addDispatch(room: RoomInfo, spec: { agentName: string; metadata: string }): AgentDispatch {
    const dispatch = new AgentDispatch({
      id: newAgentId('AD_'),
      agentName: spec.agentName,
      room: room.name,
      metadata: spec.metadata,
      state: new AgentDispatchState({ createdAt: nanos(clock.now()) }),
    });
    let perRoom = dispatches.get(room.name);
    if (!perRoom) dispatches.set(room.name, (perRoom = new Map()));
    perRoom.set(dispatch.id, dispatch);
    launch(room, dispatch);
    return dispatch;
  }

  /** Ends a job on the dispatcher's side (its worker, if any, is told first). */
  function endJob(id: string, status: JobStatus, error: string): void {
    const rec = jobs.get(id);
    if (!rec) return;
    if (!rec.worker?.terminate(id, status, error)) finishJob(rec, status, error);
  }

  function finishJob(rec: JobRecord, status: JobStatus, error: string): void {
    const state = (rec.job.state ??= new JobState());
    if (!jobEnded(state.status)) {
      state.status = status;
      state.error = error;
      state.endedAt = state.updatedAt = nanos(clock.now());
    }
    forgetJob(rec);
  }

  function forgetJob(rec: JobRecord): void {
    if (!jobs.delete(rec.job.id)) return;
    count(rec.job.state?.status === JobStatus.JS_SUCCESS ? 'succeeded' : 'failed');
    const identity = rec.job.state?.participantIdentity;
    if (identity) {
      const k = participantKey(rec.room, identity);
      if (agentParticipants.get(k) === rec.job.id) agentParticipants.delete(k);
    }
  }

  function jobEndedByWorker(job: Job): void {
    const rec = jobs.get(job.id);
    if (!rec) return;
    // The dispatch keeps the worker's final view of the job.
    const dispatch = dispatches.get(rec.room)?.get(rec.dispatchId);
    if (dispatch?.state) {
      const at = dispatch.state.jobs.findIndex((j) => j.id === job.id);
      if (at >= 0) dispatch.state.jobs[at] = job;
    }
    forgetJob(rec);
  }

  function onEvent(event: SfuEvent): void {
    if (closed) return;
    switch (event.type) {
      case 'room_started': {
        const configured = event.agents?.length ? event.agents : [new RoomAgentDispatch()];
        for (const a of configured) addDispatch(event.room, a);
        return;
      }
      case 'room_finished': {
        const perRoom = dispatches.get(event.room.name);
        dispatches.delete(event.room.name);
        for (const d of perRoom?.values() ?? []) {
          for (const j of d.state?.jobs ?? []) endJob(j.id, JobStatus.JS_SUCCESS, '');
        }
        return;
      }
      case 'participant_left':
      case 'participant_connection_aborted': {
        // Replaced by a newer session of the same identity (a resumed job rejoining): not a leave.
        if (event.participant.disconnectReason === DisconnectReason.DUPLICATE_IDENTITY) return;
        const id = agentParticipants.get(participantKey(event.room.name, event.participant.identity));
        const rec = id ? jobs.get(id) : undefined;
        const worker = rec?.worker;
        if (!id || !rec || !worker) return;
        // The session of a job's previous worker, leaving after the job moved on.
        if (Number(event.participant.joinedAtMs) < rec.assignedAtMs) return;
        // Unless the worker disconnects meanwhile (then the job moves on), the job ends.
        later(AGENT_LEFT_SETTLE_MS, () => {
          if (jobs.get(id)?.worker === worker && !worker.isClosed) endJob(id, JobStatus.JS_FAILED, 'agent worker left the room');
        });
        return;
      }
      default:
    }
  }
  const detach = deps.rooms.onEvent(onEvent);

  function register(worker: AgentWorker): void {
    workers.set(worker.id, worker);
    const r = worker.registration;
    const key = workerKey(r.jobType, r.namespace, r.agentName);
    byKey.set(key, [...(byKey.get(key) ?? []), worker]);
    deps.metrics?.workers.inc();
    log.info({ workerId: worker.id, agentName: r.agentName, jobType: JobType[r.jobType], version: r.version }, 'worker registered');
  }

  function deregister(worker: AgentWorker): void {
    if (!workers.delete(worker.id)) return;
    deps.metrics?.workers.dec();
    const r = worker.registration;
    const key = workerKey(r.jobType, r.namespace, r.agentName);
    const rest = (byKey.get(key) ?? []).filter((w) => w !== worker);
    if (rest.length) byKey.set(key, rest);
    else byKey.delete(key);
    const orphaned = [...worker.runningJobs.values()];
    worker.runningJobs.clear();
    log.info({ workerId: worker.id, jobs: orphaned.length }, 'worker deregistered');
    for (const job of orphaned) {
      const rec = jobs.get(job.id);
      if (!rec) continue;
      rec.worker = undefined;
      const dispatch = dispatches.get(rec.room)?.get(rec.dispatchId);
      const room = deps.rooms.getRoom(rec.room);
      if (!dispatch || !room || closed) {
        finishJob(rec, JobStatus.JS_FAILED, 'agent worker disconnected');
        continue;
      }
      const again = rec.job.clone();
      again.room = room.toInfo();
      void offer(rec.room, dispatch, again, true, worker).then(
        (ok) => {
          if (ok) return;
          log.info({ jobId: job.id, room: rec.room }, 'no other worker for the job of a disconnected worker: job failed');
          const current = jobs.get(job.id);
          if (current && !current.worker) finishJob(current, JobStatus.JS_FAILED, 'agent worker disconnected');
        },
        (err: unknown) => log.error({ err, jobId: job.id }, 're-dispatch failed'),
      );
    }
  }

  function requireDispatches(room: string): Map<string, AgentDispatch> {
    if (!deps.rooms.getRoom(room)) throw new RoomServiceError('not_found', ROOM_NOT_FOUND);
    let perRoom = dispatches.get(room);
    if (!perRoom) dispatches.set(room, (perRoom = new Map()));
    return perRoom;
  }

  return {
    openWorker(link, apiKey) {
      let worker: AgentWorker | undefined;
      const timeout = clock.setTimeout(() => {
        if (!worker) {
          log.info('agent worker did not register in time: closing');
          link.close();
        }
      }, REGISTER_TIMEOUT_MS);
      return {
        handle(msg) {
          if (worker) return worker.handle(msg);
          // Before registration only register and ping are understood (WorkerRegisterer).
          const m = msg.message;
          if (m.case === 'ping') return link.send(pong(m.value, clock.now()));
          if (m.case !== 'register') {
            throw new WorkerProtocolError(m.case ? `unimplemented worker signal: ${m.case}` : 'unknown worker signal');
          }
          if (closed) throw new WorkerProtocolError('worker closed');
          const registration = { id: newAgentId('AW_'), ...registrationOf(m.value) };
          clock.clearTimeout(timeout);
          worker = new AgentWorker({
            registration,
            apiKey,
            apiSecret: config.keys[apiKey] ?? '',
            link,
            clock,
            logger: log,
            onJobEnded: jobEndedByWorker,
          });
          link.send(
            new ServerMessage({
              message: { case: 'register', value: new RegisterWorkerResponse({ workerId: registration.id, serverInfo }) },
            }),
          );
          register(worker);
        },
        closed() {
          clock.clearTimeout(timeout);
          if (!worker) return;
          worker.close();
          deregister(worker);
        },
      };
    },

    workers: () => [...workers.values()].map((w) => ({ id: w.id, agentName: w.registration.agentName, jobs: w.runningJobs.size })),

    async createDispatch(req) {
      const over = participantFieldOverLimit(config.limit, { metadata: req.metadata });
      if (over) throw new RoomServiceError('invalid_argument', LIMIT_ERRORS[over]);
      // As LiveKit: with auto_create the room is created (and gets its automatic dispatch too).
      if (config.room.auto_create) await deps.rooms.createRoom(new CreateRoomRequest({ name: req.room }));
      const room = deps.rooms.getRoom(req.room);
      if (!room) throw new RoomServiceError('not_found', ROOM_NOT_FOUND);
      requireDispatches(req.room);
      return snapshot(addDispatch(room.toInfo(), req));
    },

    async deleteDispatch(room, dispatchId) {
      const perRoom = requireDispatches(room);
      const dispatch = perRoom.get(dispatchId);
      if (!dispatch) throw new RoomServiceError('not_found', 'dispatch ID not found');
      perRoom.delete(dispatchId);
      for (const j of dispatch.state?.jobs ?? []) {
        const rec = jobs.get(j.id);
        const identity = j.state?.participantIdentity;
        endJob(j.id, JobStatus.JS_SUCCESS, '');
        if (!rec || !identity) continue;
        // The agent is asked to leave; it is removed if it is still there after the grace.
        later(AGENT_LEAVE_GRACE_MS, () => void deps.rooms.removeParticipant(room, identity).catch(() => undefined));
      }
      if (dispatch.state) dispatch.state.deletedAt = nanos(clock.now());
      return snapshot(dispatch);
    },

    async listDispatch(room, dispatchId) {
      const perRoom = requireDispatches(room);
      return [...perRoom.values()].filter((d) => !dispatchId || d.id === dispatchId).map(snapshot);
    },

    close() {
      closed = true;
      detach();
      for (const t of timers) clock.clearTimeout(t);
      timers.clear();
      for (const w of Array.from(workers.values())) {
        w.close();
        deregister(w);
      }
    },
  };
}
