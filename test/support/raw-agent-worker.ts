/**
 * A bare agent worker speaking @livekit/protocol's WorkerMessage / ServerMessage over the
 * SFU's `/agent` WebSocket, for the protocol edges the real @livekit/agents worker never hits
 * (bad frames, out-of-turn signals, load reports, many jobs). It answers availability requests
 * as told (`accept`), never joins rooms, and records every ServerMessage. `close()` ends it.
 */
import { AccessToken } from 'livekit-server-sdk';
import {
  JobStatus,
  JobType,
  ServerMessage,
  WorkerMessage,
  WorkerStatus,
  type AvailabilityRequest,
  type JobAssignment,
} from '@livekit/protocol';
import WebSocket from 'ws';
import { TEST_API_KEY, TEST_API_SECRET } from './sfu-harness.ts';
import { waitFor } from './wait.ts';

export async function agentToken(grant: Record<string, unknown> = { agent: true }, secret = TEST_API_SECRET): Promise<string> {
  const at = new AccessToken(TEST_API_KEY, secret);
  at.addGrant(grant);
  return at.toJwt();
}

/** The HTTP answer to an `/agent` upgrade that is refused: status and body. */
export function refusedUpgrade(wsUrl: string, headers: Record<string, string>): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(`${wsUrl}/agent`, { headers });
    ws.on('open', () => {
      ws.close();
      reject(new Error('the upgrade was accepted'));
    });
    ws.on('unexpected-response', (_req, res) => {
      let body = '';
      res.on('data', (c: Buffer) => (body += c.toString('utf8')));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body }));
    });
    ws.on('error', () => undefined);
  });
}

export interface RawWorker {
  ws: WebSocket;
  received: ServerMessage[];
  /** Resolves when the socket closed (code). */
  closed: Promise<number>;
  isOpen(): boolean;
  send(msg: WorkerMessage | Uint8Array | string): void;
  register(agentName?: string, type?: number): Promise<string>;
  /** What to answer to availability requests (default: accept as `agent-<jobid>`). */
  accept: boolean;
  assignments(): JobAssignment[];
  availability(): AvailabilityRequest[];
  updateWorker(status: WorkerStatus, load: number): void;
  updateJob(jobId: string, status: JobStatus, error?: string): void;
  /** The first received message that matches (waits up to 10 s). */
  next(match: (m: ServerMessage) => boolean, what: string): Promise<ServerMessage>;
  close(): Promise<void>;
}

export async function connectRawWorker(wsUrl: string, token?: string): Promise<RawWorker> {
  const ws = new WebSocket(`${wsUrl}/agent`, { headers: { authorization: `Bearer ${token ?? (await agentToken())}` } });
  const received: ServerMessage[] = [];
  const closed = new Promise<number>((resolve) => ws.once('close', (code) => resolve(code)));
  ws.on('error', () => undefined);
  await new Promise<void>((resolve, reject) => {
    ws.once('open', () => resolve());
    ws.once('unexpected-response', (_r, res) => reject(new Error(`upgrade refused: ${res.statusCode}`)));
  });
  const worker: RawWorker = {
    ws,
    received,
    closed,
    accept: true,
    isOpen: () => ws.readyState === WebSocket.OPEN,
    send(msg) {
      if (typeof msg === 'string' || msg instanceof Uint8Array) ws.send(msg);
      else ws.send(msg.toBinary());
    },
    async register(agentName = '', type = JobType.JT_ROOM) {
      worker.send(new WorkerMessage({ message: { case: 'register', value: { type, agentName, version: 'raw-test' } } }));
      const m = await worker.next((x) => x.message.case === 'register', 'RegisterWorkerResponse');
      return m.message.case === 'register' ? m.message.value.workerId : '';
    },
    assignments: () => received.flatMap((m) => (m.message.case === 'assignment' ? [m.message.value] : [])),
    availability: () => received.flatMap((m) => (m.message.case === 'availability' ? [m.message.value] : [])),
    updateWorker(status, load) {
      worker.send(new WorkerMessage({ message: { case: 'updateWorker', value: { status, load } } }));
    },
    updateJob(jobId, status, error = '') {
      worker.send(new WorkerMessage({ message: { case: 'updateJob', value: { jobId, status, error } } }));
    },
    next: (match, what) => waitFor(what, () => received.find(match), { timeoutMs: 10_000 }),
    async close() {
      if (ws.readyState === WebSocket.OPEN || ws.readyState === WebSocket.CONNECTING) ws.terminate();
      await closed;
    },
  };
  ws.on('message', (data, isBinary) => {
    const buf = Buffer.isBuffer(data) ? data : Buffer.from(data as ArrayBuffer);
    const msg = isBinary ? ServerMessage.fromBinary(new Uint8Array(buf)) : ServerMessage.fromJsonString(buf.toString('utf8'));
    received.push(msg);
    if (msg.message.case === 'availability' && msg.message.value.job) {
      const job = msg.message.value.job;
      worker.send(
        new WorkerMessage({
          message: {
            case: 'availability',
            value: { jobId: job.id, available: worker.accept, participantIdentity: `agent-${job.id}` },
          },
        }),
      );
    }
  });
  return worker;
}
