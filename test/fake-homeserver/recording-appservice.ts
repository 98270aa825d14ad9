/**
 * A stand-in appservice listener for fake-homeserver tests, like the one used to record the
 * fixtures: records every request (raw header order, raw body) and answers `200 {}` unless a
 * scripted answer is queued (status, body, content type, optional hold until released).
 */
import { createServer, type Server } from 'node:http';
import { closeServer, listen, urlOf } from '../../common/http.ts';

export interface ReceivedRequest {
  method: string;
  path: string;
  rawHeaders: string[];
  rawBody: string;
  body: unknown;
}

export interface ScriptedResponse {
  status: number;
  body?: string;
  contentType?: string;
  /** The response waits until this promise resolves. */
  hold?: Promise<void>;
}

export interface RecordingAppservice {
  url: string;
  port: number;
  received: ReceivedRequest[];
  transactions(): ReceivedRequest[];
  script(...answers: ScriptedResponse[]): void;
  stop(): Promise<void>;
  /** Starts listening again on the same port after `stop()`. */
  restart(): Promise<void>;
}

export async function startRecordingAppservice(port = 0): Promise<RecordingAppservice> {
  const received: ReceivedRequest[] = [];
  const scripted: ScriptedResponse[] = [];
  let server: Server;
  const make = () =>
    createServer((req, res) => {
      const chunks: Buffer[] = [];
      req.on('data', (c: Buffer) => chunks.push(c));
      req.on('end', () => {
        const rawBody = Buffer.concat(chunks).toString();
        let body: unknown;
        try {
          body = JSON.parse(rawBody);
        } catch {
          body = undefined;
        }
        received.push({ method: req.method ?? '', path: req.url ?? '', rawHeaders: req.rawHeaders, rawBody, body });
        const answer = req.url?.includes('/transactions/') ? scripted.shift() : undefined;
        const reply = () => {
          res.writeHead(answer?.status ?? 200, { 'Content-Type': answer?.contentType ?? 'application/json' });
          res.end(answer?.body ?? '{}');
        };
        if (answer?.hold) void answer.hold.then(reply);
        else reply();
      });
    });
  server = make();
  const addr = await listen(server, '127.0.0.1', port);
  return {
    url: urlOf(addr),
    port: addr.port,
    received,
    transactions: () => received.filter((r) => r.path.includes('/transactions/')),
    script: (...answers) => scripted.push(...answers),
    stop: () => closeServer(server),
    async restart() {
      server = make();
      await listen(server, '127.0.0.1', addr.port);
    },
  };
}
