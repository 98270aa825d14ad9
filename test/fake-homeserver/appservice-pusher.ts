/**
 * Pushes events to one registered appservice the way Synapse 1.132's scheduler does
 * (synapse/appservice/scheduler.py; README rules 1-10):
 * - `PUT {url}/_matrix/app/v1/transactions/{txnId}`, compact sorted JSON `{"events":[...]}`,
 *   Synapse's headers in Synapse's order, `txnId` an integer sequence;
 * - one transaction in flight; events persisted meanwhile go out together next (≤ 100);
 * - success only on a 2xx with a JSON body; anything else makes the service DOWN: every new
 *   event is stored as its own transaction and the recoverer retries the oldest with the same
 *   txnId after 2^n × `backoffBaseMs` (n = 1…9, so 2 s … 512 s by default), then sends the rest
 *   back to back; a successful ping (`ping()`) forces the retry at once;
 * - `restart()` simulates a Synapse restart: the sequence restarts at max(pending) + 1 (1 when
 *   nothing is pending), nothing is retried until the next event, and pending events are
 *   rebuilt without `prev_content` (rule 7).
 * Timers use the injected clock; `backoffBaseMs` lets tests shorten the 1 s unit.
 */
import { request } from 'node:http';
import type { Clock, TimerHandle } from '../../common/clock.ts';
import { compactSortedJson } from './canonical-json.ts';
import { formatEvent } from './event-format.ts';
import type { StoredEvent } from './model.ts';

export interface AppserviceRegistration {
  id: string;
  url: string | null;
  as_token: string;
  hs_token: string;
  sender_localpart: string;
  namespaces: { users: { regex: string; exclusive: boolean }[]; aliases: { regex: string; exclusive: boolean }[]; rooms: { regex: string; exclusive: boolean }[] };
  rate_limited?: boolean;
}

export interface PushAttempt {
  txnId: number;
  eventIds: string[];
  status: number | 'error';
  ok: boolean;
  at: number;
}

export interface PingResult {
  status: number;
  body: Record<string, unknown>;
}

interface PendingTxn {
  id: number;
  events: StoredEvent[];
  /** Rebuilt from the database after a restart: no prev_content. */
  rebuilt: boolean;
}

export interface AppservicePusher {
  enqueue(ev: StoredEvent): void;
  ping(transactionId: unknown): Promise<PingResult>;
  restart(): void;
  /** Every PUT attempt, in order (retries included). */
  readonly attempts: PushAttempt[];
  /** True while transactions are waiting for the recoverer. */
  isDown(): boolean;
  pendingCount(): number;
  /** Synapse's interest rules (§3): sender, member target, room namespace, or a joined user in namespace. */
  interested(ev: StoredEvent, joinedMembers: () => string[]): boolean;
  stop(): void;
}

export const MAX_EVENTS_PER_TXN = 100;
export const MAX_BACKOFF_EXPONENT = 9;

/** The request headers Synapse sends, in its order (rule 1). */
export function synapseHeaders(url: URL, body: string, hsToken: string): string[] {
  return [
    'Content-Length', String(Buffer.byteLength(body)),
    'Content-Type', 'application/json',
    'User-Agent', 'Synapse/1.132.0',
    'Accept', 'application/json',
    'Authorization', `Bearer ${hsToken}`,
    'Accept-Encoding', 'gzip',
    'Host', url.host,
  ];
}

export async function postRaw(method: string, target: URL, body: string, hsToken: string, timeoutMs: number): Promise<{ status: number; body: string; contentType: string }> {
  return await new Promise((resolve, reject) => {
    const list = synapseHeaders(target, body, hsToken);
    const headers: Record<string, string> = {};
    for (let i = 0; i < list.length; i += 2) headers[list[i]!] = list[i + 1]!;
    const req = request(
      target,
      { method, headers, timeout: timeoutMs, agent: false },
      (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('end', () => resolve({ status: res.statusCode ?? 0, body: Buffer.concat(chunks).toString(), contentType: String(res.headers['content-type'] ?? '') }));
        res.on('error', reject);
      },
    );
    // Synapse (Twisted) sends no Connection header; Node adds one unless told not to.
    req.removeHeader('Connection');
    req.on('timeout', () => req.destroy(new Error('timeout')));
    req.on('error', reject);
    req.end(body);
  });
}

function isJson(text: string): boolean {
  try {
    JSON.parse(text);
    return true;
  } catch {
    return false;
  }
}

export function createAppservicePusher(deps: {
  registration: AppserviceRegistration;
  clock: Clock;
  backoffBaseMs?: number;
  timeoutMs?: number;
}): AppservicePusher {
  const { registration: reg, clock } = deps;
  const base = deps.backoffBaseMs ?? 1000;
  const timeoutMs = deps.timeoutMs ?? 60_000;
  const attempts: PushAttempt[] = [];
  let nextTxnId = 1;
  let queue: StoredEvent[] = [];
  const pending: PendingTxn[] = [];
  let inFlight = false;
  let down = false;
  let backoffN = 0;
  let recoverTimer: TimerHandle | undefined;
  let recovering = false;
  let stopped = false;
  /** After a restart the scheduler starts only with the next event (rule 10). */
  let dormant = false;

  async function send(txn: PendingTxn): Promise<boolean> {
    if (!reg.url) return true;
    const now = clock.now();
    const body = compactSortedJson({ events: txn.events.map((e) => formatEvent(e, now, { withoutPrev: txn.rebuilt })) });
    const target = new URL(`${reg.url.replace(/\/+$/, '')}/_matrix/app/v1/transactions/${txn.id}`);
    let ok = false;
    let status: number | 'error' = 'error';
    try {
      const r = await postRaw('PUT', target, body, reg.hs_token, timeoutMs);
      status = r.status;
      ok = r.status >= 200 && r.status < 300 && isJson(r.body);
    } catch {
      ok = false;
    }
    attempts.push({ txnId: txn.id, eventIds: txn.events.map((e) => e.event_id), status, ok, at: clock.now() });
    return ok;
  }

  function scheduleRecovery(): void {
    if (stopped || recoverTimer || recovering) return;
    backoffN = Math.min(backoffN + 1, MAX_BACKOFF_EXPONENT);
    recoverTimer = clock.setTimeout(() => {
      recoverTimer = undefined;
      void recover();
    }, 2 ** backoffN * base);
  }

  async function recover(): Promise<void> {
    if (recovering || stopped) return;
    recovering = true;
    try {
      while (pending.length) {
        if (!(await send(pending[0]!))) {
          recovering = false;
          scheduleRecovery();
          return;
        }
        pending.shift();
      }
      down = false;
      backoffN = 0;
    } finally {
      recovering = false;
    }
    if (queue.length) void flush();
  }

  async function flush(): Promise<void> {
    if (inFlight || down || stopped || dormant || queue.length === 0) return;
    inFlight = true;
    const events = queue.slice(0, MAX_EVENTS_PER_TXN);
    queue = queue.slice(events.length);
    const txn: PendingTxn = { id: nextTxnId++, events, rebuilt: false };
    pending.push(txn);
    const ok = await send(txn);
    inFlight = false;
    if (ok) {
      pending.splice(pending.indexOf(txn), 1);
      void flush();
    } else {
      down = true;
      // While DOWN every queued event becomes its own stored transaction (rule 8).
      for (const ev of queue) pending.push({ id: nextTxnId++, events: [ev], rebuilt: false });
      queue = [];
      scheduleRecovery();
    }
  }

  function interested(ev: StoredEvent, joined: () => string[]): boolean {
    const re = reg.namespaces.users.map((n) => new RegExp(`^(?:${n.regex})`));
    const bot = `@${reg.sender_localpart}:`;
    const matches = (u: string) => u.startsWith(bot) || re.some((r) => r.test(u));
    if (matches(ev.sender)) return true;
    if (ev.type === 'm.room.member' && ev.state_key && matches(ev.state_key)) return true;
    if (reg.namespaces.rooms.some((n) => new RegExp(`^(?:${n.regex})`).test(ev.room_id))) return true;
    return joined().some(matches);
  }

  return {
    attempts,
    enqueue(ev) {
      if (stopped) return;
      if (dormant) {
        dormant = false;
        if (pending.length) {
          down = true;
          pending.push({ id: nextTxnId++, events: [ev], rebuilt: false });
          scheduleRecovery();
          return;
        }
      }
      if (down) {
        pending.push({ id: nextTxnId++, events: [ev], rebuilt: false });
        return;
      }
      queue.push(ev);
      void flush();
    },
    async ping(transactionId) {
      if (!reg.url) return { status: 400, body: { errcode: 'M_URL_NOT_SET', error: 'Application service URL is not set' } };
      const started = clock.now();
      const target = new URL(`${reg.url.replace(/\/+$/, '')}/_matrix/app/v1/ping`);
      try {
        const r = await postRaw('POST', target, compactSortedJson({ transaction_id: transactionId ?? null }), reg.hs_token, timeoutMs);
        if (r.status < 200 || r.status >= 300) {
          return { status: 502, body: { errcode: 'M_BAD_STATUS', error: `HTTP ${r.status}`, status: r.status, body: r.body } };
        }
      } catch (err) {
        const msg = (err as Error).message;
        if (msg === 'timeout') return { status: 504, body: { errcode: 'M_CONNECTION_TIMEOUT', error: 'Connection to application service timed out' } };
        return { status: 502, body: { errcode: 'M_CONNECTION_FAILED', error: 'ConnectionRefusedError: Connection was refused by other side: 111: Connection refused.' } };
      }
      // A successful ping forces the recoverer to retry now (not when dormant after a restart).
      if (down && !dormant && !recovering) {
        clock.clearTimeout(recoverTimer);
        recoverTimer = undefined;
        void recover();
      }
      return { status: 200, body: { duration_ms: Math.max(0, clock.now() - started) } };
    },
    restart() {
      clock.clearTimeout(recoverTimer);
      recoverTimer = undefined;
      for (const ev of queue) pending.push({ id: nextTxnId++, events: [ev], rebuilt: false });
      queue = [];
      for (const t of pending) t.rebuilt = true;
      nextTxnId = pending.length ? Math.max(...pending.map((t) => t.id)) + 1 : 1;
      inFlight = false;
      recovering = false;
      down = false;
      backoffN = 0;
      dormant = true;
    },
    isDown: () => down || (dormant && pending.length > 0),
    pendingCount: () => pending.length + queue.length,
    stop() {
      stopped = true;
      clock.clearTimeout(recoverTimer);
    },
    interested,
  };
}
