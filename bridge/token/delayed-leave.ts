/**
 * Delegated delayed leave (lk-jwt-service `delayedEventManager.go`): while a participant is on
 * the SFU, keep restarting their MSC4140 delayed leave event; when they go, send it. One job per
 * (LiveKit room, identity); a newer request replaces the job. States and transitions:
 *
 *   waiting   + participant_joined / participant found by polling  -> connected
 *   waiting   + min(1 h, delay timeout) passes                     -> disconnected
 *   waiting   + participant_connection_aborted                     -> aborted (nothing sent)
 *   connected + left intentionally / connection aborted / sanity poll says gone -> disconnected
 *   connected + restart 404 / CS API unresolvable / restart out of time         -> aborted
 *   any       + newer job for the same key                         -> replaced
 *
 * Entering connected restarts at once, then every 80 % of the delay timeout. Entering
 * disconnected sends, retried (1 s ×1.5, jitter 0.5, ≤ 60 s, 429 honours Retry-After) until the
 * deadline clamped to [1 s, 1 h]; 404 counts as sent. Finished jobs leave the store; jobs of a
 * stopped manager stay in it and are resumed by `restore()` (expired ones purged). A delay
 * timeout above 24 h is refused (`JobRejectedError`), so no timer is ever armed past what
 * `setTimeout` holds.
 *
 * Watching the SFU ourselves (the sanity poll): every `sanityCheckIntervalMs` one
 * ListParticipants per SFU room that has jobs, not one request per job; a connected job whose
 * participant is missing is disconnected, a waiting one whose participant is there connected.
 * So a webhook that never comes (the SFU's `webhook.urls` not pointing at `/sfu_webhook`) costs
 * at most one interval, and that misconfiguration is logged once: when polling finds a job's
 * participant gone, or connected for a while, and no webhook has ever arrived.
 *
 * Several replicas: a job runs in exactly one manager, the holder of its lease in the store
 * (job-store.ts), renewed every third of `leaseMs`. `add()` takes the lease (replacing the job
 * wherever it ran); every renewal round also adopts stored jobs whose lease is free (their
 * replica died: within the lease and one round), and a replica that stops releases its leases
 * and says so, so the others adopt its jobs at once. An SFU event for a job this replica does
 * not run is published to the others, and the owner applies it.
 *
 * Restart and send go through delayed-event-actions.ts: path form first, the authenticated
 * body form (Synapse 1.132) as the appservice acting for the owner; without that credential
 * the job logs it once and ends as on a 404.
 *
 * Lifecycle: built by `createDelayedLeaveManager(deps)`; `restore()` once at start (subscribes,
 * adopts free stored jobs, starts the lease and watch rounds), `add()` from the token handlers,
 * `onSfuEvent()` from the webhook, `close()` at shutdown (hands its jobs over). Every timer runs on
 * the injected clock; async steps re-check that their job is still current before acting.
 */
import { randomUUID } from 'node:crypto';
import { repeatEvery, type Clock, type Repeating, type TimerHandle } from '../../common/clock.ts';
import type { Logger } from '../../common/logger.ts';
import type { HomeserverClient } from '../homeserver/client.ts';
import { createBackoff, createDelayedEventActions } from './delayed-event-actions.ts';
import type { CsApiResolver } from './cs-api-resolver.ts';
import type { DelayedLeaveJobStore, JobMessage, JobParams } from './job-store.ts';
import { jobField } from './job-store.ts';
import type { SfuRoomService } from '../sfu/room-service.ts';

export type JobState = 'waiting' | 'connected' | 'disconnected' | 'aborted' | 'replaced';

export type JobSignal =
  | 'participant_connected'
  | 'lookup_successful'
  | 'disconnected_intentionally'
  | 'connection_aborted'
  | 'sfu_participant_gone'
  | 'waiting_timed_out'
  | 'restart_timed_out'
  | 'restart_not_found'
  | 'cs_api_not_found';

const TRANSITIONS: Record<JobState, Partial<Record<JobSignal, JobState>>> = {
  waiting: {
    participant_connected: 'connected',
    lookup_successful: 'connected',
    connection_aborted: 'aborted',
    waiting_timed_out: 'disconnected',
  },
  connected: {
    disconnected_intentionally: 'disconnected',
    connection_aborted: 'disconnected',
    sfu_participant_gone: 'disconnected',
    restart_timed_out: 'aborted',
    restart_not_found: 'aborted',
    cs_api_not_found: 'aborted',
  },
  disconnected: {},
  aborted: {},
  replaced: {},
};

export { createBackoff } from './delayed-event-actions.ts';

export const HOUR_MS = 3_600_000;
/** The longest `delay_timeout` taken (24 h); larger is refused, not clamped. */
export const MAX_DELAY_TIMEOUT_MS = 24 * HOUR_MS;
/** Default lease of a job on its replica; the owner renews it every third of it. */
export const DEFAULT_LEASE_MS = 6_000;
/** How long a job found by polling may stay connected without any webhook before we warn. */
export const WEBHOOK_GRACE_MS = 5_000;

export class ShuttingDownError extends Error {
  constructor() {
    super('the delayed-leave manager is shutting down');
    this.name = 'ShuttingDownError';
  }
}

export class JobRejectedError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'JobRejectedError';
  }
}

export interface DelayedLeaveManagerDeps {
  clock: Clock;
  logger: Logger;
  store: DelayedLeaveJobStore;
  sfu: Pick<SfuRoomService, 'participantExists' | 'listParticipants'>;
  homeserver: HomeserverClient;
  csApi: CsApiResolver;
  /** Appservice as_token, for jobs with `asUserId` and the body-form fallback. */
  asToken?: string;
  /** The appservice's homeserver (`config.appservice.serverName`): its users may be acted as. */
  appserviceServerName?: string;
  /** `LIVEKIT_SANITY_CHECK_INTERVAL_SECONDS` in ms; 0 = off. */
  sanityCheckIntervalMs: number;
  /** This replica's name on its leases (default a random one). */
  replicaId?: string;
  /** Lease of a job on its replica (default 6 s): how long a dead replica`s jobs wait. */
  leaseMs?: number;
  /** [0,1) source for backoff jitter; tests pass a fixed one. */
  random?: () => number;
  onStateChange?: (room: string, identity: string, state: JobState) => void;
}

export interface DelayedLeaveManager {
  add(params: JobParams): Promise<void>;
  /** From the webhook (any replica): applied here if this replica runs the job, else forwarded. */
  onSfuEvent(room: string, identity: string, event: 'joined' | 'left' | 'aborted', clientInitiated: boolean): void;
  restore(): Promise<void>;
  /**
   * Ends the job without sending its leave (the membership monitor removed the participant for
   * having left the room). Run elsewhere: its lease is taken from the owner, who drops the job on
   * its next renewal, and the stored job is deleted, so nobody adopts it.
   */
  stop(room: string, identity: string): Promise<void>;
  state(room: string, identity: string): JobState | undefined;
  size(): number;
  close(): Promise<void>;
}

interface Job {
  params: JobParams;
  key: string;
  state: JobState;
  restartDeadline: number | undefined;
  waitingTimer?: TimerHandle;
  restartTimer?: TimerHandle;
  pollTimer?: TimerHandle;
  actionTimer?: TimerHandle;
  /** Epoch ms until which this replica's lease is known to hold. */
  leaseUntil: number;
  /** Whether "no credential for the body form" was logged for this job. */
  noCredentialLogged?: boolean;
  log: Logger;
}

export function createDelayedLeaveManager(deps: DelayedLeaveManagerDeps): DelayedLeaveManager {
  const { clock, logger, store, sfu, homeserver, csApi } = deps;
  const random = deps.random ?? Math.random;
  const replicaId = deps.replicaId ?? `replica-${randomUUID()}`;
  const leaseMs = deps.leaseMs ?? DEFAULT_LEASE_MS;
  const jobs = new Map<string, Job>();
  const actions = createDelayedEventActions({ clock, logger, homeserver, asToken: deps.asToken, appserviceServerName: deps.appserviceServerName, random });
  let closed = false;
  let started: Promise<void> | undefined;
  let webhookSeen = false;
  let misconfigurationLogged = false;
  let unsubscribe: (() => void) | undefined;
  let leaseLoop: Repeating | undefined;
  let watchLoop: Repeating | undefined;
  /** Pending check that a job found by polling got its participant_joined webhook. */
  let graceTimer: TimerHandle | undefined;

  const isCurrent = (job: Job) => !closed && jobs.get(job.key) === job;

  function stopTimers(job: Job): void {
    for (const t of [job.waitingTimer, job.restartTimer, job.pollTimer, job.actionTimer]) clock.clearTimeout(t);
    job.waitingTimer = job.restartTimer = job.pollTimer = job.actionTimer = undefined;
  }

  function finish(job: Job): void {
    stopTimers(job);
    if (jobs.get(job.key) !== job) return;
    jobs.delete(job.key);
    if (closed) return;
    const { room, identity } = job.params;
    store
      .delete(room, identity)
      .then(() => store.release(room, identity, replicaId))
      .catch((err: unknown) => {
        job.log.warn({ err: (err as Error).message }, 'could not delete finished delayed-leave job from the store');
      });
  }

  /** This replica no longer runs the job (another took it over); the store keeps it. */
  function drop(job: Job, why: string): void {
    if (jobs.get(job.key) !== job) return;
    stopTimers(job);
    job.state = 'replaced';
    jobs.delete(job.key);
    job.log.info({ why }, 'delayed-leave job now run by another replica');
    deps.onStateChange?.(job.params.room, job.params.identity, 'replaced');
  }

  /** Logged once per process: the SFU's webhook does not reach this service. */
  function warnNoWebhook(why: string): void {
    if (webhookSeen || misconfigurationLogged) return;
    misconfigurationLogged = true;
    clock.clearTimeout(graceTimer);
    graceTimer = undefined;
    logger.warn(
      { why, sanityCheckIntervalSeconds: deps.sanityCheckIntervalMs / 1000 },
      'no SFU webhook has reached /sfu_webhook although delegated-leave participants came and went: set the SFU`s webhook.urls to this service`s /sfu_webhook (and webhook.api_key to the key this service uses); until then leaves are noticed only by polling the SFU',
    );
  }

  function signal(job: Job, sig: JobSignal): void {
    if (!isCurrent(job)) return;
    const next = TRANSITIONS[job.state][sig];
    if (!next) {
      job.log.debug({ state: job.state, signal: sig }, 'delayed-leave signal ignored');
      return;
    }
    const prev = job.state;
    // Exit actions.
    if (prev === 'waiting') {
      clock.clearTimeout(job.waitingTimer);
      job.waitingTimer = undefined;
    }
    if (prev === 'connected') {
      clock.clearTimeout(job.restartTimer);
      clock.clearTimeout(job.actionTimer);
      job.restartTimer = job.actionTimer = undefined;
    }
    job.state = next;
    job.log.debug({ from: prev, to: next, signal: sig }, 'delayed-leave job state');
    try {
      deps.onStateChange?.(job.params.room, job.params.identity, next);
    } catch (err) {
      job.log.warn({ err: (err as Error).message }, 'delayed-leave state listener threw');
    }
    // Entry actions.
    if (next === 'connected') {
      job.restartDeadline = clock.now() + job.params.delayTimeoutMs;
      void runRestart(job);
    } else if (next === 'disconnected') {
      const remaining = Math.min(HOUR_MS, Math.max(1000, (job.restartDeadline ?? 0) - clock.now()));
      void runSend(job, remaining);
    } else if (next === 'aborted') {
      finish(job);
    }
  }

  async function runRestart(job: Job): Promise<void> {
    if (!isCurrent(job) || job.state !== 'connected') return;
    const remaining = (job.restartDeadline ?? 0) - clock.now();
    if (remaining <= 0) return signal(job, 'restart_timed_out');
    let csUrl: string;
    try {
      csUrl = await csApi.resolve(job.params.serverName);
    } catch (err) {
      job.log.warn({ err: (err as Error).message }, 'restart: client-server API unresolvable');
      return signal(job, 'cs_api_not_found');
    }
    const result = await actions.retry(job, csUrl, 'restart', remaining, () => isCurrent(job) && job.state === 'connected');
    if (result === undefined) return;
    if (result === 'not_found' || result === 'no_credential') return signal(job, 'restart_not_found');
    if (result === 'gave_up') return signal(job, 'restart_timed_out');
    const restartedAt = clock.now();
    job.restartDeadline = restartedAt + job.params.delayTimeoutMs;
    store.save({ params: job.params, restartedAt }).catch((err: unknown) => {
      job.log.warn({ err: (err as Error).message }, 'could not persist delayed-leave restart');
    });
    job.restartTimer = clock.setTimeout(() => void runRestart(job), job.params.delayTimeoutMs * 0.8);
  }

  async function runSend(job: Job, windowMs: number): Promise<void> {
    let csUrl: string;
    try {
      csUrl = await csApi.resolve(job.params.serverName);
    } catch (err) {
      job.log.warn({ err: (err as Error).message }, 'send: client-server API unresolvable');
      return finish(job);
    }
    if (!isCurrent(job)) return;
    const result = await actions.retry(job, csUrl, 'send', windowMs, () => isCurrent(job) && job.state === 'disconnected');
    if (result === undefined) return;
    if (result === 'not_found') job.log.info('delayed leave event already sent or cancelled');
    else if (result === 'ok') job.log.info('delayed leave event sent');
    finish(job);
  }

  /** Phase 1: poll GetParticipant until present (or the waiting window ends); phase 2: sanity checks. */
  function startLookup(job: Job): void {
    const windowMs = Math.min(HOUR_MS, job.params.delayTimeoutMs);
    const startedAt = clock.now();
    const nextDelay = createBackoff(random);
    const phase1 = async () => {
      job.pollTimer = undefined;
      if (!isCurrent(job)) return;
      let present = false;
      try {
        present = await sfu.participantExists(job.params.room, job.params.identity);
      } catch (err) {
        job.log.debug({ err: (err as Error).message }, 'participant lookup failed; retrying');
      }
      if (!isCurrent(job)) return;
      if (present) return connectedByPoll(job);
      const delay = nextDelay();
      if (clock.now() + delay - startedAt > windowMs) return;
      job.pollTimer = clock.setTimeout(() => void phase1(), delay);
    };
    void phase1();
  }

  function connectedByPoll(job: Job): void {
    if (job.state !== 'waiting') return;
    clock.clearTimeout(job.pollTimer);
    job.pollTimer = undefined;
    signal(job, 'lookup_successful');
    if (webhookSeen || misconfigurationLogged || graceTimer) return;
    // The SFU's participant_joined may come a moment after the look-up found the participant;
    // still none after the grace (and none at all so far) means the webhook is not wired.
    graceTimer = clock.setTimeout(() => {
      graceTimer = undefined;
      if (isCurrent(job) && job.state === 'connected') {
        warnNoWebhook('a participant found on the SFU by polling has had no participant_joined webhook');
      }
    }, WEBHOOK_GRACE_MS);
  }

  /** The sanity poll: one ListParticipants per SFU room with jobs, then each job compared. */
  async function watchRooms(): Promise<void> {
    const byRoom = new Map<string, Job[]>();
    for (const job of jobs.values()) {
      if (job.state !== 'connected' && job.state !== 'waiting') continue;
      const list = byRoom.get(job.params.room) ?? [];
      list.push(job);
      byRoom.set(job.params.room, list);
    }
    for (const [room, roomJobs] of byRoom) {
      let present: Set<string>;
      try {
        present = new Set((await sfu.listParticipants(room)).map((p) => p.identity));
      } catch (err) {
        logger.debug({ room, err: (err as Error).message }, 'sanity check failed (ignored)');
        continue;
      }
      for (const job of roomJobs) {
        if (!isCurrent(job)) continue;
        const here = present.has(job.params.identity);
        if (job.state === 'connected' && !here) {
          warnNoWebhook('a participant left the SFU and only polling noticed');
          signal(job, 'sfu_participant_gone');
        } else if (job.state === 'waiting' && here) connectedByPoll(job);
      }
    }
  }

  /** Renews the leases of the jobs run here, drops those lost, adopts stored jobs nobody runs. */
  async function leaseRound(): Promise<void> {
    const renewals = [...jobs.values()].map(async (job) => {
      const askedAt = clock.now();
      let held: boolean | undefined;
      try {
        held = await store.claim(job.params.room, job.params.identity, replicaId, leaseMs);
      } catch (err) {
        job.log.debug({ err: (err as Error).message }, 'could not renew the delayed-leave lease');
      }
      if (!isCurrent(job)) return;
      if (held === true) job.leaseUntil = askedAt + leaseMs;
      else if (held === false) drop(job, 'lease taken by another replica');
      else if (clock.now() >= job.leaseUntil) drop(job, 'lease expired while the store was unreachable');
    });
    await Promise.all(renewals);
    await adopt();
  }

  /** Starts the stored jobs whose lease is free (first start, or their replica died); purges expired ones. */
  async function adopt(): Promise<number> {
    let adopted = 0;
    for (const s of await store.all()) {
      if (closed) break;
      const key = jobField(s.params.room, s.params.identity);
      if (jobs.has(key)) continue;
      if (s.restartedAt + s.params.delayTimeoutMs <= clock.now() || !(s.params.delayTimeoutMs <= MAX_DELAY_TIMEOUT_MS)) {
        if (!(await store.claim(s.params.room, s.params.identity, replicaId, leaseMs))) continue;
        logger.info({ room: s.params.room }, 'purging expired (or out-of-range) stored delayed-leave job');
        await store.delete(s.params.room, s.params.identity);
        await store.release(s.params.room, s.params.identity, replicaId);
        continue;
      }
      if (!(await store.claim(s.params.room, s.params.identity, replicaId, leaseMs))) continue;
      // The listing may be older than the lease: the job may have finished (or been replaced) since.
      const current = await store.get(s.params.room, s.params.identity);
      if (closed || jobs.has(key)) continue;
      if (!current) {
        await store.release(s.params.room, s.params.identity, replicaId);
        continue;
      }
      start(current.params);
      adopted++;
    }
    return adopted;
  }

  function onMessage(m: JobMessage): void {
    if (closed) return;
    if (m.kind === 'released') {
      if (m.owner !== replicaId) adopt().catch((err: unknown) => logger.warn({ err: (err as Error).message }, 'could not adopt released delayed-leave jobs'));
      return;
    }
    const job = jobs.get(jobField(m.room, m.identity));
    if (m.kind === 'claimed') {
      if (!job || m.owner === replicaId) return;
      // Two requests for one participant on two replicas at once: the lease says who won.
      store.claim(m.room, m.identity, replicaId, leaseMs).then(
        (held) => {
          if (!held) drop(job, 'a newer request for the same participant reached another replica');
        },
        (err: unknown) => job.log.debug({ err: (err as Error).message }, 'could not check the delayed-leave lease'),
      );
      return;
    }
    if (m.from === replicaId) return;
    webhookSeen = true;
    if (job) apply(job, m.event, m.clientInitiated);
  }

  function apply(job: Job, event: 'joined' | 'left' | 'aborted', clientInitiated: boolean): void {
    if (event === 'joined') {
      signal(job, 'participant_connected');
    } else signal(job, clientInitiated ? 'disconnected_intentionally' : 'connection_aborted');
  }

  /** Subscribes and starts the lease and watch rounds, once (later callers wait for the first). */
  function begin(): Promise<void> {
    started ??= beginOnce().catch((err: unknown) => {
      started = undefined; // the next call tries again
      throw err;
    });
    return started;
  }

  async function beginOnce(): Promise<void> {
    unsubscribe = await store.subscribe(onMessage);
    // A store outage fails every round: say so once per distinct error, not every 2 s.
    let lastError = '';
    const onError = (err: unknown) => {
      const message = (err as Error).message;
      if (message !== lastError) logger.warn({ err: message }, 'delayed-leave round failed (repeats are logged at debug)');
      else logger.debug({ err: message }, 'delayed-leave round failed');
      lastError = message;
    };
    let busy = false;
    const guarded = (fn: () => Promise<unknown>) => () => {
      if (busy || closed) return;
      busy = true;
      fn()
        .then(() => (lastError = ''), onError)
        .finally(() => (busy = false));
    };
    leaseLoop = repeatEvery(clock, Math.max(1, Math.floor(leaseMs / 3)), guarded(leaseRound), onError);
    leaseLoop.start();
    if (deps.sanityCheckIntervalMs <= 0) {
      logger.info('the SFU poll for delegated leaves is off (LIVEKIT_SANITY_CHECK_INTERVAL_SECONDS=0): a leave the SFU`s webhook does not report is never noticed');
    } else {
      let watching = false;
      watchLoop = repeatEvery(
        clock,
        deps.sanityCheckIntervalMs,
        () => {
          if (watching || closed) return;
          watching = true;
          watchRooms()
            .catch(onError)
            .finally(() => (watching = false));
        },
        onError,
      );
      watchLoop.start();
    }
  }

  function start(params: JobParams): Job {
    const key = jobField(params.room, params.identity);
    const previous = jobs.get(key);
    if (previous) {
      stopTimers(previous);
      previous.state = 'replaced';
      previous.log.debug('delayed-leave job replaced by a newer one');
    }
    const job: Job = {
      params,
      key,
      state: 'waiting',
      restartDeadline: undefined,
      leaseUntil: clock.now() + leaseMs,
      log: logger.child({ room: params.room, delayId: params.delayId }),
    };
    jobs.set(key, job);
    job.waitingTimer = clock.setTimeout(() => signal(job, 'waiting_timed_out'), Math.min(HOUR_MS, params.delayTimeoutMs));
    startLookup(job);
    return job;
  }

  return {
    async add(params) {
      if (closed) throw new ShuttingDownError();
      if (!params.delayId || !(params.delayTimeoutMs > 0)) throw new JobRejectedError('a delayed-leave job needs a delay id and a positive timeout');
      if (!(params.delayTimeoutMs <= MAX_DELAY_TIMEOUT_MS)) {
        throw new JobRejectedError(`\`delay_timeout\` is ${params.delayTimeoutMs} ms; at most ${MAX_DELAY_TIMEOUT_MS} (24 h) is supported`);
      }
      await begin();
      // Lease first: a sibling's adoption round must never see the job stored but unowned.
      await store.claim(params.room, params.identity, replicaId, leaseMs, true);
      await store.save({ params, restartedAt: clock.now() });
      if (closed) throw new ShuttingDownError();
      start(params);
      await store.publish({ kind: 'claimed', owner: replicaId, room: params.room, identity: params.identity });
    },

    onSfuEvent(room, identity, event, clientInitiated) {
      webhookSeen = true;
      const job = jobs.get(jobField(room, identity));
      if (job) return apply(job, event, clientInitiated);
      if (closed) return;
      store.publish({ kind: 'sfu', from: replicaId, room, identity, event, clientInitiated }).catch((err: unknown) => {
        logger.warn({ err: (err as Error).message }, 'could not forward an SFU event to the other replicas');
      });
    },

    async restore() {
      await begin();
      const adopted = await adopt();
      if (adopted) logger.info({ jobs: adopted }, 'delayed-leave jobs restored');
    },

    async stop(room, identity) {
      if (closed) return;
      const job = jobs.get(jobField(room, identity));
      if (job) {
        job.state = 'aborted';
        job.log.info('delegated leave stopped: the participant was removed for leaving the Matrix room');
        deps.onStateChange?.(room, identity, 'aborted');
        return finish(job);
      }
      if (!(await store.get(room, identity))) return;
      // Held, not released: the owner's renewal must fail (it drops the job), and expiry frees it.
      await store.claim(room, identity, replicaId, leaseMs, true);
      await store.delete(room, identity);
      await store.publish({ kind: 'claimed', owner: replicaId, room, identity });
    },

    state(room, identity) {
      return jobs.get(jobField(room, identity))?.state;
    },

    size: () => jobs.size,

    async close() {
      closed = true;
      leaseLoop?.stop();
      watchLoop?.stop();
      clock.clearTimeout(graceTimer);
      unsubscribe?.();
      const held = [...jobs.values()];
      for (const job of held) stopTimers(job);
      jobs.clear();
      // Hand the jobs over at once instead of after the lease: a sibling adopts them on its next round.
      await Promise.allSettled(held.map((j) => store.release(j.params.room, j.params.identity, replicaId)));
      if (held.length) await store.publish({ kind: 'released', owner: replicaId }).catch(() => undefined);
    },
  };
}
