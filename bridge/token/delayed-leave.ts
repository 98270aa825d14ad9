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
 * stopped manager stay in it and are resumed by `restore()` (expired ones purged).
 *
 * Two forms of the action exist (homeserver/client.ts): the path form `…/{id}/<action>` first;
 * a 404 M_UNRECOGNIZED (unknown endpoint, not unknown id) switches to the body form
 * `…/{id}` `{"action"}`, which Synapse 1.132 only accepts from a user. The bridge has a user
 * credential only as the appservice of the delayed event owner's homeserver (as_token +
 * `?user_id=`); without one the job logs it once and ends as on a 404. The form that answered
 * is remembered per client-server API URL, so later calls go straight to it.
 *
 * Lifecycle: built by `createDelayedLeaveManager(deps)`; `restore()` once at start, `add()` from
 * the token handlers, `onSfuEvent()` from the webhook, `close()` at shutdown. Every timer runs on
 * the injected clock; async steps re-check that their job is still current before acting.
 */
import type { Clock, TimerHandle } from '../../common/clock.ts';
import type { Logger } from '../../common/logger.ts';
import type { ActionOutcome, AsIdentity, DelayedEventAction, DelayedEventForm, HomeserverClient } from '../homeserver/client.ts';
import { serverNameOfUserId } from './names.ts';
import type { CsApiResolver } from './cs-api-resolver.ts';
import type { DelayedLeaveJobStore, JobParams } from './job-store.ts';
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

export const HOUR_MS = 3_600_000;

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
  sfu: Pick<SfuRoomService, 'participantExists'>;
  homeserver: HomeserverClient;
  csApi: CsApiResolver;
  /** Appservice as_token, for jobs with `asUserId` and the body-form fallback. */
  asToken?: string;
  /** The appservice's homeserver (`config.appservice.serverName`): its users may be acted as. */
  appserviceServerName?: string;
  /** `LIVEKIT_SANITY_CHECK_INTERVAL_SECONDS` in ms; 0 = off. */
  sanityCheckIntervalMs: number;
  /** [0,1) source for backoff jitter; tests pass a fixed one. */
  random?: () => number;
  onStateChange?: (room: string, identity: string, state: JobState) => void;
}

export interface DelayedLeaveManager {
  add(params: JobParams): Promise<void>;
  onSfuEvent(room: string, identity: string, event: 'joined' | 'left' | 'aborted', clientInitiated: boolean): void;
  restore(): Promise<void>;
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
  /** Whether "no credential for the body form" was logged for this job. */
  noCredentialLogged?: boolean;
  log: Logger;
}

/** Backoff intervals: 1 s, ×1.5, ±50 % jitter, at most 60 s. */
export function createBackoff(random: () => number): () => number {
  let interval = 1000;
  return () => {
    const delta = 0.5 * interval;
    const next = interval - delta + random() * (2 * delta);
    interval = Math.min(60_000, interval * 1.5);
    return Math.min(60_000, next);
  };
}

export function createDelayedLeaveManager(deps: DelayedLeaveManagerDeps): DelayedLeaveManager {
  const { clock, logger, store, sfu, homeserver, csApi } = deps;
  const random = deps.random ?? Math.random;
  const jobs = new Map<string, Job>();
  /** Client-server API URL -> the action form that server answered (not M_UNRECOGNIZED). */
  const forms = new Map<string, DelayedEventForm>();
  let closed = false;

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
    store.delete(job.params.room, job.params.identity).catch((err: unknown) => {
      job.log.warn({ err: (err as Error).message }, 'could not delete finished delayed-leave job from the store');
    });
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

  function asIdentity(job: Job): AsIdentity | undefined {
    return job.params.asUserId && deps.asToken ? { asToken: deps.asToken, userId: job.params.asUserId } : undefined;
  }

  /** The credential for the body form: the appservice acting as the owner, if it may. */
  function bodyIdentity(job: Job): AsIdentity | undefined {
    const own = asIdentity(job);
    if (own) return own;
    const user = job.params.userId;
    if (!deps.asToken || !deps.appserviceServerName || !user || serverNameOfUserId(user) !== deps.appserviceServerName) return undefined;
    return { asToken: deps.asToken, userId: user };
  }

  /** Remember the form a server answered with (a transport failure tells nothing). */
  function learn(csUrl: string, form: DelayedEventForm, outcome: ActionOutcome): void {
    if (outcome.kind === 'unrecognized' || (outcome.kind === 'retry' && outcome.status === undefined)) return;
    if (forms.get(csUrl) === form) return;
    forms.set(csUrl, form);
    logger.info({ csApi: csUrl, form }, `homeserver takes delayed-event actions in the ${form === 'body' ? 'authenticated {action}' : 'path'} form`);
  }

  /**
   * One attempt of `action` in the form the server is known to take (path form first, body form
   * after a 404 M_UNRECOGNIZED). 'no_credential': only the body form works there and the bridge
   * may not act as the owner.
   */
  async function attempt(job: Job, csUrl: string, action: DelayedEventAction): Promise<ActionOutcome | { kind: 'no_credential' }> {
    const { delayId } = job.params;
    if (forms.get(csUrl) !== 'body') {
      const outcome = await homeserver.delayedEventAction(csUrl, delayId, action, asIdentity(job), 'path');
      learn(csUrl, 'path', outcome);
      if (outcome.kind !== 'unrecognized') return outcome;
      if (!isCurrent(job)) return outcome;
    }
    const cred = bodyIdentity(job);
    if (!cred) {
      if (!job.noCredentialLogged) {
        job.noCredentialLogged = true;
        job.log.warn(
          { csApi: csUrl, action, appservice: Boolean(deps.asToken) },
          deps.asToken
            ? 'the homeserver only takes authenticated delayed-event actions ({action} form) and the owner is not a user of the appservice`s homeserver: the delayed leave cannot be managed'
            : 'the homeserver only takes authenticated delayed-event actions ({action} form) and the bridge runs without an appservice registration: the delayed leave cannot be managed',
        );
      }
      return { kind: 'no_credential' };
    }
    const outcome = await homeserver.delayedEventAction(csUrl, delayId, action, cred, 'body');
    learn(csUrl, 'body', outcome);
    if (outcome.kind === 'unrecognized') {
      forms.delete(csUrl);
      job.log.warn({ csApi: csUrl, action }, 'the homeserver knows neither form of delayed-event management');
    }
    return outcome;
  }

  /**
   * Calls the action until `stop` says so or the window closes. Resolves with the last outcome
   * ('ok' | 'not_found' | 'no_credential' | 'gave_up'), or undefined when the job stopped being current.
   */
  async function retryAction(job: Job, csUrl: string, action: DelayedEventAction, windowMs: number, stateAtStart: JobState) {
    const startedAt = clock.now();
    const nextDelay = createBackoff(random);
    for (;;) {
      const outcome = await attempt(job, csUrl, action);
      if (!isCurrent(job) || job.state !== stateAtStart) return undefined;
      // An endpoint neither form has counts as an unknown id (today's 404 semantics).
      if (outcome.kind === 'unrecognized') return 'not_found' as const;
      if (outcome.kind !== 'retry') return outcome.kind;
      const delay = Math.max(nextDelay(), outcome.retryAfterMs ?? 0);
      if (clock.now() + delay - startedAt > windowMs) {
        job.log.warn({ action, reason: outcome.reason }, 'delayed event action gave up');
        return 'gave_up' as const;
      }
      job.log.debug({ action, reason: outcome.reason, retryInMs: Math.round(delay) }, 'delayed event action will be retried');
      await new Promise<void>((resolve) => {
        job.actionTimer = clock.setTimeout(resolve, delay);
      });
      if (!isCurrent(job) || job.state !== stateAtStart) return undefined;
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
    const result = await retryAction(job, csUrl, 'restart', remaining, 'connected');
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
    const result = await retryAction(job, csUrl, 'send', windowMs, 'disconnected');
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
      if (present) {
        signal(job, 'lookup_successful');
        if (deps.sanityCheckIntervalMs > 0) job.pollTimer = clock.setTimeout(() => void phase2(), deps.sanityCheckIntervalMs);
        return;
      }
      const delay = nextDelay();
      if (clock.now() + delay - startedAt > windowMs) return;
      job.pollTimer = clock.setTimeout(() => void phase1(), delay);
    };
    const phase2 = async () => {
      job.pollTimer = undefined;
      if (!isCurrent(job)) return;
      let present: boolean | undefined;
      try {
        present = await sfu.participantExists(job.params.room, job.params.identity);
      } catch (err) {
        job.log.debug({ err: (err as Error).message }, 'sanity check failed (ignored)');
      }
      if (!isCurrent(job)) return;
      if (present === false) return signal(job, 'sfu_participant_gone');
      job.pollTimer = clock.setTimeout(() => void phase2(), deps.sanityCheckIntervalMs);
    };
    void phase1();
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
      await store.save({ params, restartedAt: clock.now() });
      if (closed) throw new ShuttingDownError();
      start(params);
    },

    onSfuEvent(room, identity, event, clientInitiated) {
      const job = jobs.get(jobField(room, identity));
      if (!job) return;
      if (event === 'joined') signal(job, 'participant_connected');
      else signal(job, clientInitiated ? 'disconnected_intentionally' : 'connection_aborted');
    },

    async restore() {
      const stored = await store.all();
      for (const s of stored) {
        if (closed) return;
        if (s.restartedAt + s.params.delayTimeoutMs <= clock.now()) {
          logger.info({ room: s.params.room }, 'purging expired stored delayed-leave job');
          await store.delete(s.params.room, s.params.identity);
          continue;
        }
        start(s.params);
      }
      if (stored.length) logger.info({ jobs: jobs.size }, 'delayed-leave jobs restored');
    },

    state(room, identity) {
      return jobs.get(jobField(room, identity))?.state;
    },

    size: () => jobs.size,

    async close() {
      closed = true;
      for (const job of jobs.values()) stopTimers(job);
      jobs.clear();
    },
  };
}
