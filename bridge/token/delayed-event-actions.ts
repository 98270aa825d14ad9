/**
 * Restart / send of one MSC4140 delayed event for the delegated-leave jobs (delayed-leave.ts),
 * with lk-jwt-service's retries (1 s ×1.5, jitter 0.5, ≤ 60 s, 429 honours Retry-After) inside a
 * window, in whichever of the two forms the homeserver takes: the path form `…/{id}/<action>`
 * first; a 404 M_UNRECOGNIZED (unknown endpoint, not unknown id) switches to the body form
 * `…/{id}` `{"action"}`, which Synapse 1.132 only accepts from a user, so only as the appservice
 * acting for the owner. The form that answered is remembered per client-server API URL.
 * Built once per manager by `createDelayedEventActions(deps)`; timers on the injected clock.
 */
import type { Clock, TimerHandle } from '../../common/clock.ts';
import type { Logger } from '../../common/logger.ts';
import type { ActionOutcome, AsIdentity, DelayedEventAction, DelayedEventForm, HomeserverClient } from '../homeserver/client.ts';
import type { JobParams } from './job-store.ts';
import { serverNameOfUserId } from './names.ts';

/** What an action needs of a job; `actionTimer` is its pending retry (cleared by the owner). */
export interface ActionJob {
  params: JobParams;
  log: Logger;
  actionTimer?: TimerHandle;
  /** Whether "no credential for the body form" was logged for this job. */
  noCredentialLogged?: boolean;
}

export type RetryResult = 'ok' | 'not_found' | 'no_credential' | 'gave_up';

export interface DelayedEventActionsDeps {
  clock: Clock;
  logger: Logger;
  homeserver: HomeserverClient;
  asToken?: string;
  appserviceServerName?: string;
  random: () => number;
}

export interface DelayedEventActions {
  retry(job: ActionJob, csUrl: string, action: DelayedEventAction, windowMs: number, stillCurrent: () => boolean): Promise<RetryResult | undefined>;
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

export function createDelayedEventActions(deps: DelayedEventActionsDeps): DelayedEventActions {
  const { clock, logger, homeserver, asToken, appserviceServerName, random } = deps;
  /** Client-server API URL -> the action form that server answered (not M_UNRECOGNIZED). */
  const forms = new Map<string, DelayedEventForm>();

  function asIdentity(job: ActionJob): AsIdentity | undefined {
    return job.params.asUserId && asToken ? { asToken: asToken, userId: job.params.asUserId } : undefined;
  }

  /** The credential for the body form: the appservice acting as the owner, if it may. */
  function bodyIdentity(job: ActionJob): AsIdentity | undefined {
    const own = asIdentity(job);
    if (own) return own;
    const user = job.params.userId;
    if (!asToken || !appserviceServerName || !user || serverNameOfUserId(user) !== appserviceServerName) return undefined;
    return { asToken: asToken, userId: user };
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
  async function attempt(job: ActionJob, csUrl: string, action: DelayedEventAction, stillCurrent: () => boolean): Promise<ActionOutcome | { kind: 'no_credential' }> {
    const { delayId } = job.params;
    if (forms.get(csUrl) !== 'body') {
      const outcome = await homeserver.delayedEventAction(csUrl, delayId, action, asIdentity(job), 'path');
      learn(csUrl, 'path', outcome);
      if (outcome.kind !== 'unrecognized') return outcome;
      if (!stillCurrent()) return outcome;
    }
    const cred = bodyIdentity(job);
    if (!cred) {
      if (!job.noCredentialLogged) {
        job.noCredentialLogged = true;
        job.log.warn(
          { csApi: csUrl, action, appservice: Boolean(asToken) },
          asToken
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
   * Calls the action until it succeeds, is final, or the window closes. Resolves with the last
   * outcome ('ok' | 'not_found' | 'no_credential' | 'gave_up'), or undefined once `stillCurrent`
   * says the job moved on.
   */
  async function retry(job: ActionJob, csUrl: string, action: DelayedEventAction, windowMs: number, stillCurrent: () => boolean): Promise<RetryResult | undefined> {
    const startedAt = clock.now();
    const nextDelay = createBackoff(random);
    for (;;) {
      const outcome = await attempt(job, csUrl, action, stillCurrent);
      if (!stillCurrent()) return undefined;
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
      if (!stillCurrent()) return undefined;
    }
  }

  return { retry };
}
