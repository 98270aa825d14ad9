/**
 * One registered agent worker, as LiveKit server keeps it (livekit pkg/agent/worker.go): its
 * registration (agent name, job type, namespace, permissions, version), the status and load it
 * reports, the jobs it runs and the availability questions still open. Session state only: it
 * talks to its connection through a `WorkerLink` (send a ServerMessage, close) and never sees a
 * socket. Built by the agent dispatcher when the edge finishes the register handshake; the
 * edge hands it each later WorkerMessage (`handle`); `close()` (from the dispatcher when the
 * connection ended) fails every open availability question. Timers run on the injected clock.
 */
import { randomBytes } from 'node:crypto';
import {
  AvailabilityRequest,
  JobAssignment,
  JobState,
  JobStatus,
  JobTermination,
  JobType,
  ParticipantPermission,
  ServerMessage,
  WorkerPong,
  WorkerStatus,
  type AvailabilityResponse,
  type Job,
  type RegisterWorkerRequest,
  type UpdateJobStatus,
  type WorkerMessage,
} from '@livekit/protocol';
import { SignJWT } from 'jose';
import type { Clock, TimerHandle } from '../../common/clock.ts';
import type { Logger } from '../../common/logger.ts';

/** LiveKit's AgentNameAttributeKey: every agent participant carries its agent name here. */
export const AGENT_NAME_ATTRIBUTE = 'lk.agent_name';
/** pkg/agent worker.go AssignJobTimeout. */
export const ASSIGN_JOB_TIMEOUT_MS = 10_000;
/** protocol agent.BuildAgentToken: the job token is valid for an hour. */
export const AGENT_TOKEN_TTL_S = 60 * 60;

/** The worker's connection, as the session layer sees it. */
export interface WorkerLink {
  send(msg: ServerMessage): void;
  /** Ends the connection (LiveKit closes without a reason frame). */
  close(): void;
}

export interface WorkerRegistration {
  id: string;
  agentName: string;
  namespace: string;
  jobType: JobType;
  version: string;
  permissions: ParticipantPermission;
}

/** A worker signal LiveKit answers by closing the connection (DispatchWorkerSignal errors). */
export class WorkerProtocolError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'WorkerProtocolError';
  }
}

const BASE57 = '23456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz';
/** protocol utils/guid: prefix + 12 base57 characters (AW_ worker, AJ_ job, AD_ dispatch). */
export function newAgentId(prefix: 'AW_' | 'AJ_' | 'AD_'): string {
  const bytes = randomBytes(12);
  let out = prefix;
  for (const b of bytes) out += BASE57[b % BASE57.length];
  return out;
}

export const isKnownJobType = (t: number): t is JobType =>
  t === JobType.JT_ROOM || t === JobType.JT_PUBLISHER || t === JobType.JT_PARTICIPANT;

/** LiveKit's WorkerRegisterer.HandleRegister: the registration a RegisterWorkerRequest makes. */
export function registrationOf(req: RegisterWorkerRequest): Omit<WorkerRegistration, 'id'> {
  if (!isKnownJobType(req.type)) throw new WorkerProtocolError('unknown job type');
  return {
    agentName: req.agentName,
    namespace: req.namespace ?? '',
    jobType: req.type,
    version: req.version,
    permissions:
      req.allowedPermissions?.clone() ??
      new ParticipantPermission({ canSubscribe: true, canPublish: true, canPublishData: true, canUpdateMetadata: true }),
  };
}

export const jobEnded = (s: JobStatus) => s === JobStatus.JS_SUCCESS || s === JobStatus.JS_FAILED;

export function pong(ping: { timestamp: bigint }, nowMs: number): ServerMessage {
  return new ServerMessage({
    message: { case: 'pong', value: new WorkerPong({ lastTimestamp: ping.timestamp, timestamp: BigInt(nowMs) }) },
  });
}

export interface WorkerDeps {
  registration: WorkerRegistration;
  apiKey: string;
  apiSecret: string;
  link: WorkerLink;
  clock: Clock;
  logger: Logger;
  /** A job of this worker ended (its UpdateJobStatus said so, or it was terminated). */
  onJobEnded(job: Job): void;
}

interface OpenQuestion {
  resolve(res: AvailabilityResponse | undefined): void;
  timer: TimerHandle;
}

export class AgentWorker {
  readonly registration: WorkerRegistration;
  readonly apiKey: string;
  status: WorkerStatus = WorkerStatus.WS_AVAILABLE;
  load = 0;
  readonly runningJobs = new Map<string, Job>();
  private readonly questions = new Map<string, OpenQuestion>();
  private closed = false;
  private readonly log: Logger;
  private readonly deps: WorkerDeps;

  constructor(deps: WorkerDeps) {
    this.deps = deps;
    this.registration = deps.registration;
    this.apiKey = deps.apiKey;
    this.log = deps.logger.child({ workerId: deps.registration.id, agentName: deps.registration.agentName });
  }

  get id(): string {
    return this.registration.id;
  }

  get isClosed(): boolean {
    return this.closed;
  }

  /**
   * LiveKit's Worker.AssignJob: asks the worker (AvailabilityRequest), and when it accepts mints
   * the job's participant token and sends the JobAssignment. Resolves with the job as assigned
   * (the object this worker keeps updating) in state RUNNING, or SUCCESS when the worker
   * answered `terminate`; undefined when it declined, timed out or closed (the dispatcher then
   * tries another worker).
   */
  async assign(job: Job, resuming = false): Promise<Job | undefined> {
    if (this.closed || this.questions.has(job.id)) return undefined;
    const now = BigInt(this.deps.clock.now()) * 1_000_000n;
    const state = new JobState({
      ...job.state,
      workerId: this.id,
      updatedAt: now,
      startedAt: now,
      status: JobStatus.JS_RUNNING,
    });
    const offered = job.clone();
    offered.state = state;
    const answer = new Promise<AvailabilityResponse | undefined>((resolve) => {
      const timer = this.deps.clock.setTimeout(() => {
        this.questions.delete(job.id);
        this.log.warn({ jobId: job.id }, 'agent worker availability timeout');
        resolve(undefined);
      }, ASSIGN_JOB_TIMEOUT_MS);
      this.questions.set(job.id, { resolve, timer });
    });
    this.deps.link.send(
      new ServerMessage({ message: { case: 'availability', value: new AvailabilityRequest({ job: offered, resuming }) } }),
    );
    const res = await answer;
    if (!res || this.closed) return undefined;
    if (res.terminate) {
      state.endedAt = now;
      state.status = JobStatus.JS_SUCCESS;
      return offered;
    }
    if (!res.available) return undefined;
    state.participantIdentity = res.participantIdentity;
    const token = await this.mintJobToken(offered.room?.name ?? '', res);
    if (this.closed) return undefined;
    this.deps.link.send(new ServerMessage({ message: { case: 'assignment', value: new JobAssignment({ job: offered, token }) } }));
    this.runningJobs.set(job.id, offered);
    return offered;
  }

  /** protocol agent.BuildAgentToken: a join token for the job's participant, kind agent. */
  private mintJobToken(room: string, res: AvailabilityResponse): Promise<string> {
    const p = this.registration.permissions;
    const now = Math.floor(this.deps.clock.now() / 1000);
    return new SignJWT({
      name: res.participantName,
      metadata: res.participantMetadata,
      attributes: { ...res.participantAttributes, [AGENT_NAME_ATTRIBUTE]: this.registration.agentName },
      kind: 'agent',
      video: {
        roomJoin: true,
        room,
        agent: true,
        canPublish: p.canPublish,
        canSubscribe: p.canSubscribe,
        canPublishData: p.canPublishData,
        canUpdateOwnMetadata: p.canUpdateMetadata,
        hidden: p.hidden,
      },
    })
      .setProtectedHeader({ alg: 'HS256' })
      .setIssuer(this.apiKey)
      .setSubject(res.participantIdentity)
      .setNotBefore(now)
      .setExpirationTime(now + AGENT_TOKEN_TTL_S)
      .sign(new TextEncoder().encode(this.deps.apiSecret));
  }

  /** LiveKit's TerminateJob: JobTermination to the worker, then the job ends with `status`. */
  terminate(jobId: string, status: JobStatus, error = ''): JobState | undefined {
    if (!this.runningJobs.has(jobId)) return undefined;
    this.deps.link.send(new ServerMessage({ message: { case: 'termination', value: new JobTermination({ jobId }) } }));
    return this.updateJob({ jobId, status, error });
  }

  /** A registered worker's signal (DispatchWorkerSignal). Throws WorkerProtocolError to close. */
  handle(msg: WorkerMessage): void {
    const m = msg.message;
    switch (m.case) {
      case 'ping':
        this.deps.link.send(pong(m.value, this.deps.clock.now()));
        return;
      case 'updateWorker':
        if (m.value.status !== undefined) this.status = m.value.status;
        this.load = m.value.load;
        return;
      case 'availability':
        return this.answer(m.value);
      case 'updateJob':
        // Unknown jobs (another worker's, or one already ended) are ignored, as LiveKit does.
        if (!this.updateJob(m.value)) this.log.debug({ jobId: m.value.jobId }, 'received job update for unknown job');
        return;
      case 'migrateJob':
        return; // Not implemented on LiveKit OSS either.
      case 'simulateJob':
        throw new WorkerProtocolError('unimplemented worker signal: SimulateJob');
      case 'register':
        throw new WorkerProtocolError('unimplemented worker signal: Register');
      default:
        throw new WorkerProtocolError('unknown worker signal');
    }
  }

  private answer(res: AvailabilityResponse): void {
    const q = this.questions.get(res.jobId);
    if (!q) {
      this.log.warn({ jobId: res.jobId }, 'received availability response for unknown job');
      return;
    }
    this.questions.delete(res.jobId);
    this.deps.clock.clearTimeout(q.timer);
    q.resolve(res);
  }

  private updateJob(update: Pick<UpdateJobStatus, 'jobId' | 'status' | 'error'>): JobState | undefined {
    const job = this.runningJobs.get(update.jobId);
    if (!job?.state) return undefined;
    const now = BigInt(this.deps.clock.now()) * 1_000_000n;
    job.state.updatedAt = now;
    if (job.state.status === JobStatus.JS_PENDING && update.status !== JobStatus.JS_PENDING) job.state.startedAt = now;
    job.state.status = update.status;
    job.state.error = update.error;
    if (jobEnded(update.status)) {
      job.state.endedAt = now;
      this.runningJobs.delete(update.jobId);
      this.log.info({ jobId: update.jobId, status: JobStatus[update.status], error: update.error }, 'job ended');
      this.deps.onJobEnded(job);
    }
    return job.state.clone();
  }

  /** The connection ended: open questions fail, the dispatcher deals with the running jobs. */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    for (const q of this.questions.values()) {
      this.deps.clock.clearTimeout(q.timer);
      q.resolve(undefined);
    }
    this.questions.clear();
    this.deps.link.close();
  }
}
