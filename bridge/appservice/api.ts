/**
 * The appservice HTTP API (Matrix application-service spec, as Synapse calls it), on express:
 * `PUT /_matrix/app/v1/transactions/:txnId`, `POST /_matrix/app/v1/ping`, the user and room
 * alias queries, and 404 `M_UNRECOGNIZED` for anything else under `/_matrix/app`. Every request
 * must carry the `hs_token` (`Authorization: Bearer`, or the legacy `access_token` query),
 * compared in constant time: none → 401 `M_UNAUTHORIZED`, wrong → 403 `M_FORBIDDEN`.
 * A transaction is answered `{}` only after its effects are stored; it is deduplicated on
 * (txnId, its event ids) for `txnTtlMs`, atomically across replicas, because Synapse reuses
 * txn ids after a restart. One bad event never fails a transaction; a store failure does (500),
 * so the homeserver retries it.
 */
import { createHash } from 'node:crypto';
import express, { type NextFunction, type Request, type Response, type Router } from 'express';
import type { Logger } from '../../common/logger.ts';
import { MatrixError, sendMatrixError } from '../http/matrix-error.ts';
import { bearerToken, tokenMatches } from '../http/secrets.ts';
import type { BridgeStore } from '../store/store.ts';
import type { BridgeMetrics } from './metrics.ts';

export const APPSERVICE_PREFIX = '/_matrix/app';

/**
 * Largest transaction body we accept. Synapse puts at most 100 PDUs and 100 EDUs (and, with
 * MSC2409, 100 to-device messages) into one transaction; a PDU is at most 64 KiB and the client
 * format adds `unsigned` (`prev_content` of a state event can double it), so a full
 * transaction can approach 100 x 128 KiB + 200 x 64 KiB = 25 MiB in theory, but real EDUs
 * (typing, receipts, presence) are a few hundred bytes. 32 MiB is above any transaction Synapse
 * builds, so we never refuse one it will retry forever; it is read only after the hs_token
 * check, so only the homeserver can make us buffer it.
 */
export const MAX_TRANSACTION_BYTES = 32 * 1024 * 1024;

export interface AppserviceApiDeps {
  hsToken: string;
  store: BridgeStore;
  logger: Logger;
  metrics: BridgeMetrics;
  /** Applies a transaction's events; resolves once their effects are stored. */
  applyEvents(events: unknown[]): Promise<void>;
  /** How long a processed transaction is remembered (ms). */
  txnTtlMs: number;
  /** Lease of the replica processing a transaction, renewed every third of it (ms). */
  txnLockMs?: number;
  /** How long a duplicate delivery waits for a sibling replica to finish (ms). */
  busyWaitMs?: number;
  /** Called when the homeserver pings us (`transaction_id` as sent). */
  onPing?(transactionId: unknown): void;
}

function matrixError(res: Response, status: number, errcode: string, error: string): void {
  sendMatrixError(res, new MatrixError(status, errcode, error));
}

function tokenOf(req: Request): string | undefined {
  const fromHeader = bearerToken(req.headers.authorization);
  if (fromHeader !== undefined) return fromHeader;
  const q = req.query.access_token;
  return typeof q === 'string' && q !== '' ? q : undefined;
}

/** Dedupe key: the txnId alone is reused by Synapse after a restart, its event ids are not. */
export function transactionKey(txnId: string, events: unknown[]): string {
  const ids = events.map((e) => (typeof e === 'object' && e && typeof (e as { event_id?: unknown }).event_id === 'string' ? (e as { event_id: string }).event_id : '?'));
  return `${txnId}:${createHash('sha256').update(ids.join('\n')).digest('base64url').slice(0, 22)}`;
}

export function createAppserviceRouter(deps: AppserviceApiDeps): Router {
  const { store, logger, metrics } = deps;
  const lockMs = deps.txnLockMs ?? 10_000;
  const busyWaitMs = deps.busyWaitMs ?? 10_000;
  const router = express.Router();
  /** Transactions being processed in this process, so a duplicate waits for the same work. */
  const inFlight = new Map<string, Promise<void>>();

  router.use((req, res, next) => {
    const token = tokenOf(req);
    if (token === undefined) {
      metrics.transactions.inc({ outcome: 'unauthorized' });
      return matrixError(res, 401, 'M_UNAUTHORIZED', 'Missing hs_token');
    }
    if (!tokenMatches(token, deps.hsToken)) {
      metrics.transactions.inc({ outcome: 'forbidden' });
      return matrixError(res, 403, 'M_FORBIDDEN', 'Invalid hs_token');
    }
    next();
  });
  // A declared length over the limit is refused before reading (express.json would first read
  // off the whole body, however long it takes); a chunked one is cut at the limit by express.json.
  router.use((req, res, next) => {
    if (Number(req.headers['content-length'] ?? 0) > MAX_TRANSACTION_BYTES) {
      metrics.transactions.inc({ outcome: 'bad_request' });
      return matrixError(res, 413, 'M_TOO_LARGE', 'Transaction too large');
    }
    next();
  });
  router.use(express.json({ limit: MAX_TRANSACTION_BYTES, type: () => true }));

  async function processOnce(key: string, events: unknown[]): Promise<'processed' | 'duplicate' | 'busy'> {
    if (await store.isTxnDone(key)) return 'duplicate';
    if ((await store.lockTxn(key, lockMs)) === 'busy') {
      // A sibling replica is on it: wait (bounded) for it to finish, or for its lease to lapse
      // (it died or gave up) and take the transaction over.
      const deadline = Date.now() + busyWaitMs;
      let acquired = false;
      while (!acquired && Date.now() < deadline) {
        await new Promise((r) => setTimeout(r, 50));
        if (await store.isTxnDone(key)) return 'duplicate';
        acquired = (await store.lockTxn(key, lockMs)) === 'acquired';
      }
      if (!acquired) return 'busy';
    }
    // Keep the lease while we work; if this process dies, it lapses within `lockMs`.
    const renewal = setInterval(() => void store.renewTxnLock(key, lockMs).catch(() => undefined), Math.max(1, Math.floor(lockMs / 3)));
    try {
      if (await store.isTxnDone(key)) return 'duplicate';
      await deps.applyEvents(events);
      await store.markTxnDone(key, deps.txnTtlMs);
      return 'processed';
    } finally {
      clearInterval(renewal);
      await store.unlockTxn(key).catch(() => undefined);
    }
  }

  async function handleTransaction(req: Request, res: Response): Promise<void> {
    const txnId = String(req.params.txnId);
    const body = req.body as { events?: unknown } | undefined;
    if (typeof body !== 'object' || body === null || Array.isArray(body)) {
      metrics.transactions.inc({ outcome: 'bad_request' });
      matrixError(res, 400, 'M_BAD_JSON', 'The body must be a JSON object');
      return;
    }
    const events = body.events === undefined ? [] : body.events;
    if (!Array.isArray(events)) {
      metrics.transactions.inc({ outcome: 'bad_request' });
      matrixError(res, 400, 'M_BAD_JSON', '`events` must be an array');
      return;
    }
    const key = transactionKey(txnId, events);
    const log = logger.child({ txnId, events: events.length });
    let work = inFlight.get(key) as Promise<unknown> | undefined;
    const mine = !work;
    if (!work) {
      const p = processOnce(key, events);
      inFlight.set(key, p.then(() => undefined, () => undefined));
      work = p;
      void p.finally(() => inFlight.delete(key)).catch(() => undefined);
    }
    try {
      const outcome = mine ? ((await work) as 'processed' | 'duplicate' | 'busy') : (await work, 'duplicate');
      metrics.transactions.inc({ outcome });
      if (outcome === 'busy') {
        log.warn('transaction still being processed by another replica; asking the homeserver to retry');
        matrixError(res, 503, 'M_UNKNOWN', 'Transaction is being processed; retry later');
        return;
      }
      log.debug({ outcome }, 'transaction handled');
      res.status(200).json({});
    } catch (err) {
      metrics.transactions.inc({ outcome: 'failed' });
      log.error({ err }, 'transaction failed; the homeserver will retry it');
      matrixError(res, 500, 'M_UNKNOWN', 'Could not store the transaction; retry later');
    }
  }
  router.put('/v1/transactions/:txnId', (req, res) => void handleTransaction(req, res));

  router.post('/v1/ping', (req, res) => {
    const body = req.body as { transaction_id?: unknown } | undefined;
    try {
      deps.onPing?.(body?.transaction_id);
    } catch (err) {
      logger.warn({ err }, 'ping listener failed');
    }
    res.status(200).json({});
  });

  // We provision no users or aliases: Synapse asks only about unknown ones, and they stay unknown.
  router.get('/v1/users/:userId', (_req, res) => matrixError(res, 404, 'M_NOT_FOUND', 'This appservice does not provide users'));
  router.get('/v1/rooms/:roomAlias', (_req, res) => matrixError(res, 404, 'M_NOT_FOUND', 'This appservice does not provide room aliases'));

  router.use((_req, res) => matrixError(res, 404, 'M_UNRECOGNIZED', 'Unrecognized request'));
  router.use((err: unknown, _req: Request, res: Response, _next: NextFunction) => {
    const e = err as { type?: string; status?: number };
    if (e.type === 'entity.parse.failed') return matrixError(res, 400, 'M_NOT_JSON', 'Content not JSON.');
    if (e.type === 'entity.too.large') return matrixError(res, 413, 'M_TOO_LARGE', 'Transaction too large');
    logger.error({ err }, 'appservice request failed');
    matrixError(res, 500, 'M_UNKNOWN', 'Internal error');
  });
  return router;
}
