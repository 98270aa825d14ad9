/**
 * Test helper: a webhook receiver on 127.0.0.1 that checks every request the way LiveKit
 * consumers do (livekit-server-sdk's WebhookReceiver: JWT signature, expiry, body sha256) and
 * records what arrived. Each request is answered by `respond(n)` (n counts from 1): a status,
 * or 'hang' to never answer. Used by the notifier's unit tests and the integration tests.
 */
import { createServer, type IncomingHttpHeaders, type ServerResponse } from 'node:http';
import { WebhookReceiver, type WebhookEvent } from 'livekit-server-sdk';
import { closeServer, listen, urlOf } from '../../common/http.ts';

export interface ReceivedWebhook {
  body: string;
  headers: IncomingHttpHeaders;
  /** Parsed by WebhookReceiver, or undefined when verification failed (see `error`). */
  event?: WebhookEvent;
  error?: string;
}

export interface TestWebhookReceiver {
  readonly url: string;
  /** Every request, in arrival order. */
  readonly requests: ReceivedWebhook[];
  /** Requests that verified and were answered 2xx, in order. */
  accepted(): WebhookEvent[];
  stop(): Promise<void>;
}

export async function startTestWebhookReceiver(opts: {
  apiKey: string;
  apiSecret: string;
  respond?: (n: number) => number | 'hang';
  path?: string;
}): Promise<TestWebhookReceiver> {
  const receiver = new WebhookReceiver(opts.apiKey, opts.apiSecret);
  const requests: ReceivedWebhook[] = [];
  const statuses: (number | 'hang')[] = [];
  const hanging = new Set<ServerResponse>();
  const server = createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      void (async () => {
        const body = Buffer.concat(chunks).toString('utf8');
        const record: ReceivedWebhook = { body, headers: req.headers };
        try {
          record.event = await receiver.receive(body, req.headers.authorization);
        } catch (err) {
          record.error = (err as Error).message;
        }
        requests.push(record);
        const answer = opts.respond?.(requests.length) ?? 200;
        statuses.push(answer);
        if (answer === 'hang') {
          hanging.add(res);
          return;
        }
        res.writeHead(record.error ? 401 : answer);
        res.end();
      })();
    });
  });
  const url = `${urlOf(await listen(server, '127.0.0.1', 0))}${opts.path ?? '/webhook'}`;
  return {
    url,
    requests,
    accepted: () =>
      requests.flatMap((r, i) => {
        const s = statuses[i];
        return r.event && typeof s === 'number' && s >= 200 && s < 300 ? [r.event] : [];
      }),
    async stop() {
      for (const res of hanging) res.destroy();
      await closeServer(server);
    },
  };
}
