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
 *   rebuilt without `prev_content` (rule 7);
 * - ephemeral data (`enqueueEphemeral`, `enqueueToDevice`) only for a registration with
 *   `receive_ephemeral` (keys `ephemeral` + `de.sorunome.msc2409.to_device`) or the legacy
 *   `de.sorunome.msc2409.push_ephemeral` (keys `de.sorunome.msc2409.ephemeral` + `…to_device`),
 *   to-device only with the homeserver flag `msc2409ToDevice` (synapse/appservice/api.py
 *   `push_bulk`, synapse/handlers/appservice.py); a retry is rebuilt from stored event ids, so it
 *   carries them empty, and while DOWN ephemeral-only data is dropped (scheduler.py `send`);
 * - `enqueue(ev, queryUsers)` first asks `GET {url}/_matrix/app/v1/users/{userId}` for each
 *   unknown namespaced user, in order, before the event can be pushed (handlers/appservice.py
 *   `_check_user_exists`).
 * Timers use the injected clock; `backoffBaseMs` lets tests shorten the 1 s unit.
 */
import { request } from 'node:http';
import type { Clock, TimerHandle } from '../../common/clock.ts';
import { compactSortedJson } from './canonical-json.ts';
import { formatEvent } from './event-format.ts';
import type { StoredEvent } from './model.ts';
import { createInterest, type Interest, type RoomFacts } from './registration.ts';

export interface AppserviceRegistration {
  id: string;
  url: string | null;
  as_token: string;
  hs_token: string;
  sender_localpart: string;
  namespaces: { users: { regex: string; exclusive: boolean }[]; aliases: { regex: string; exclusive: boolean }[]; rooms: { regex: string; exclusive: boolean }[] };
  rate_limited?: boolean;
  protocols?: string[];
  /** MSC2409 stable flag (spec v1.13): `ephemeral` + `de.sorunome.msc2409.to_device`. */
  receive_ephemeral?: boolean;
  /** MSC2409 legacy flag: `de.sorunome.msc2409.ephemeral` + `de.sorunome.msc2409.to_device`. */
  'de.sorunome.msc2409.push_ephemeral'?: boolean;
}

export type Edu = Record<string, unknown>;

export interface UserQuery {
  userId: string;
  status: number | 'error';
  at: number;
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
  /** Sent on the first attempt only: Synapse stores event ids, not ephemeral data. */
  ephemeral: Edu[];
  toDevice: Edu[];
  /** Rebuilt from the database after a restart: no prev_content. */
  rebuilt: boolean;
}

export interface AppservicePusher {
  /** Queues an event; `queryUsers` are asked about (user query API) before it may be pushed. */
  enqueue(ev: StoredEvent, queryUsers?: readonly string[]): void;
  /** Typing / receipt / presence EDUs (dropped unless the registration asks for ephemeral). */
  enqueueEphemeral(edus: readonly Edu[]): void;
  /** MSC2409/MSC4203 to-device messages with `to_user_id` / `to_device_id`. */
  enqueueToDevice(messages: readonly Edu[]): void;
  /** Every user query made, in order. */
  readonly userQueries: UserQuery[];
  /** Ephemeral and to-device items dropped because the service was DOWN. */
  droppedEphemeral(): number;
  ping(transactionId: unknown): Promise<PingResult>;
  restart(): void;
  /** Every PUT attempt, in order (retries included). */
  readonly attempts: PushAttempt[];
  /** True while transactions are waiting for the recoverer. */
  isDown(): boolean;
  pendingCount(): number;
  /** Synapse's interest rules (§3): sender, member target, room namespace/alias, or a joined local user of interest. */
  interested(ev: StoredEvent, facts: () => RoomFacts): boolean;
  readonly interest: Interest;
  stop(): void;
}

export const MAX_EVENTS_PER_TXN = 100;
export const MAX_EPHEMERAL_PER_TXN = 100;
export const MAX_TO_DEVICE_PER_TXN = 100;
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
  /** Defaults to the registration's rules on server `localhost`. */
  interest?: Interest;
  /** Homeserver `experimental_features.msc2409_to_device_messages_enabled`. */
  msc2409ToDevice?: boolean;
}): AppservicePusher {
  const { registration: reg, clock } = deps;
  const base = deps.backoffBaseMs ?? 1000;
  const timeoutMs = deps.timeoutMs ?? 60_000;
  const interest = deps.interest ?? createInterest(reg, 'localhost');
  const stableEphemeral = reg.receive_ephemeral === true;
  const legacyEphemeral = !stableEphemeral && reg['de.sorunome.msc2409.push_ephemeral'] === true;
  const wantsEphemeral = stableEphemeral || legacyEphemeral;
  const attempts: PushAttempt[] = [];
  const userQueries: UserQuery[] = [];
  let nextTxnId = 1;
  let queue: StoredEvent[] = [];
  let ephemeralQueue: Edu[] = [];
  let toDeviceQueue: Edu[] = [];
  const pending: PendingTxn[] = [];
  let inFlight = false;
  let down = false;
  let backoffN = 0;
  let recoverTimer: TimerHandle | undefined;
  let recovering = false;
  let stopped = false;
  let dropped = 0;
  /** After a restart the scheduler starts only with the next event (rule 10). */
  let dormant = false;
  /** Events waiting behind user queries (kept in order). */
  let gate: Promise<void> = Promise.resolve();
  let gated = 0;

  function txnBody(txn: PendingTxn, now: number): string {
    const body: Record<string, unknown> = { events: txn.events.map((e) => formatEvent(e, now, { withoutPrev: txn.rebuilt })) };
    if (stableEphemeral) {
      body.ephemeral = txn.ephemeral;
      body['de.sorunome.msc2409.to_device'] = txn.toDevice;
    } else if (legacyEphemeral) {
      body['de.sorunome.msc2409.ephemeral'] = txn.ephemeral;
      body['de.sorunome.msc2409.to_device'] = txn.toDevice;
    }
    return compactSortedJson(body);
  }

  async function send(txn: PendingTxn): Promise<boolean> {
    if (!reg.url) return true;
    const body = txnBody(txn, clock.now());
    // A retry is rebuilt from the stored event ids: no ephemeral or to-device data (rule 9 of §9).
    txn.ephemeral = [];
    txn.toDevice = [];
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
        // Synapse resets its counter to 1 after each success: a later failure waits 4 s.
        backoffN = 1;
      }
      down = false;
      backoffN = 0;
    } finally {
      recovering = false;
    }
    if (queue.length || ephemeralQueue.length || toDeviceQueue.length) void flush();
  }

  async function flush(): Promise<void> {
    if (inFlight || down || stopped || dormant) return;
    if (queue.length === 0 && ephemeralQueue.length === 0 && toDeviceQueue.length === 0) return;
    inFlight = true;
    const events = queue.slice(0, MAX_EVENTS_PER_TXN);
    queue = queue.slice(events.length);
    const ephemeral = ephemeralQueue.slice(0, MAX_EPHEMERAL_PER_TXN);
    ephemeralQueue = ephemeralQueue.slice(ephemeral.length);
    const toDevice = toDeviceQueue.slice(0, MAX_TO_DEVICE_PER_TXN);
    toDeviceQueue = toDeviceQueue.slice(toDevice.length);
    const txn: PendingTxn = { id: nextTxnId++, events, ephemeral, toDevice, rebuilt: false };
    pending.push(txn);
    const ok = await send(txn);
    inFlight = false;
    if (ok) {
      pending.splice(pending.indexOf(txn), 1);
      void flush();
      return;
    }
    down = true;
    // An ephemeral-only transaction is not stored while DOWN (scheduler.py `send`).
    if (txn.events.length === 0) pending.splice(pending.indexOf(txn), 1);
    // While DOWN every queued event becomes its own stored transaction (rule 8); queued
    // ephemeral data is lost.
    for (const ev of queue) pending.push({ id: nextTxnId++, events: [ev], ephemeral: [], toDevice: [], rebuilt: false });
    dropped += ephemeralQueue.length + toDeviceQueue.length;
    queue = [];
    ephemeralQueue = [];
    toDeviceQueue = [];
    scheduleRecovery();
  }

  async function queryUser(userId: string): Promise<void> {
    if (!reg.url || stopped) return;
    const target = new URL(`${reg.url.replace(/\/+$/, '')}/_matrix/app/v1/users/${encodeURIComponent(userId)}`);
    let status: number | 'error' = 'error';
    try {
      status = (await postRaw('GET', target, '', reg.hs_token, timeoutMs)).status;
    } catch {
      status = 'error';
    }
    userQueries.push({ userId, status, at: clock.now() });
  }

  function accept(ev: StoredEvent): void {
    if (stopped) return;
    if (dormant) {
      dormant = false;
      if (pending.length) {
        down = true;
        pending.push({ id: nextTxnId++, events: [ev], ephemeral: [], toDevice: [], rebuilt: false });
        scheduleRecovery();
        return;
      }
    }
    if (down) {
      pending.push({ id: nextTxnId++, events: [ev], ephemeral: [], toDevice: [], rebuilt: false });
      return;
    }
    queue.push(ev);
    void flush();
  }

  /** Ephemeral data: dropped while DOWN (or DOWN across a restart), else queued. */
  function acceptEphemeral(into: 'ephemeral' | 'toDevice', items: readonly Edu[]): void {
    if (stopped || items.length === 0) return;
    if (down || (dormant && pending.length)) {
      dropped += items.length;
      return;
    }
    dormant = false;
    if (into === 'ephemeral') ephemeralQueue.push(...items);
    else toDeviceQueue.push(...items);
    void flush();
  }

  return {
    attempts,
    userQueries,
    interest,
    enqueue(ev, queryUsers = []) {
      if (stopped) return;
      if (queryUsers.length === 0 && gated === 0) return accept(ev);
      gated++;
      gate = gate
        .then(async () => {
          for (const u of queryUsers) await queryUser(u);
        })
        .then(() => {
          gated--;
          accept(ev);
        });
    },
    enqueueEphemeral(edus) {
      if (wantsEphemeral) acceptEphemeral('ephemeral', edus);
    },
    enqueueToDevice(messages) {
      if (wantsEphemeral && deps.msc2409ToDevice) acceptEphemeral('toDevice', messages);
    },
    droppedEphemeral: () => dropped,
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
      // A successful ping forces the recoverer to retry now (not when dormant after a restart:
      // no recoverer runs until the next event).
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
      for (const ev of queue) pending.push({ id: nextTxnId++, events: [ev], ephemeral: [], toDevice: [], rebuilt: false });
      queue = [];
      ephemeralQueue = [];
      toDeviceQueue = [];
      for (const t of pending) {
        t.rebuilt = true;
        t.ephemeral = [];
        t.toDevice = [];
      }
      nextTxnId = pending.length ? Math.max(...pending.map((t) => t.id)) + 1 : 1;
      inFlight = false;
      recovering = false;
      down = false;
      backoffN = 0;
      dormant = true;
    },
    isDown: () => down || (dormant && pending.length > 0),
    pendingCount: () => pending.length + queue.length + ephemeralQueue.length + toDeviceQueue.length + gated,
    stop() {
      stopped = true;
      clock.clearTimeout(recoverTimer);
    },
    interested(ev, facts) {
      return interest.isInterestedInEvent(ev, facts);
    },
  };
}
