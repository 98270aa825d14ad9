/**
 * `/sfu_webhook`: the SFU's LiveKit webhooks (participant joined / left / connection aborted)
 * into the delegated-leave jobs and the membership monitor (which also takes `room_finished`). POST only (else 405 with `Allow: POST`). The body is bounded
 * (`WEBHOOK_MAX_BODY_BYTES`): a larger `Content-Length` is answered 413 before a byte is read,
 * a chunked body is read only up to the bound; both answers close the connection, so the rest
 * of the upload is never read and the connection is not left half-drained. The signature is
 * checked by livekit-server-sdk's WebhookReceiver (JWT of the SFU's key, sha256 of the body):
 * a bad one is 401, a body that is no webhook event 400, a good event 200 (what
 * lk-jwt-service answers). Rejections are logged at most once a minute, with how many came
 * since, and counted in `matrixrtc_sfu_webhooks_total{result}`.
 */
import type { Request, RequestHandler, Response } from 'express';
import { Counter, type Registry } from 'prom-client';
import { WebhookReceiver } from 'livekit-server-sdk';
import { DisconnectReason } from '@livekit/protocol';
import type { Clock } from '../../common/clock.ts';
import type { Logger } from '../../common/logger.ts';

export const WEBHOOK_MAX_BODY_BYTES = 64 * 1024;
/** At most one rejection log line per this many ms. */
export const REJECTION_LOG_INTERVAL_MS = 60_000;

export type WebhookResult = 'accepted' | 'wrong_method' | 'too_large' | 'bad_signature' | 'bad_body';

export interface SfuWebhookDeps {
  /** The key pair the SFU signs with (its `webhook.api_key`), the bridge's LIVEKIT_KEY/SECRET. */
  apiKey: string;
  apiSecret: string;
  clock: Clock;
  logger: Logger;
  metrics: Registry;
  onEvent(room: string, identity: string, event: 'joined' | 'left' | 'aborted', clientInitiated: boolean): void;
  /** `room_finished`: the SFU closed the room. */
  onRoomFinished?(room: string): void;
  maxBodyBytes?: number;
}

class TooLarge extends Error {}

/**
 * Reads up to `limit` bytes. Over it, stops reading (pauses, without destroying the request:
 * that would take the socket and the 413 with it) and throws TooLarge.
 */
function readBounded(req: Request, limit: number): Promise<string> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let size = 0;
    const cleanup = () => {
      req.off('data', onData);
      req.off('end', onEnd);
      req.off('error', onError);
    };
    const onData = (chunk: Buffer) => {
      size += chunk.length;
      if (size > limit) {
        cleanup();
        req.pause();
        reject(new TooLarge());
      } else chunks.push(chunk);
    };
    const onEnd = () => {
      cleanup();
      resolve(Buffer.concat(chunks).toString('utf8'));
    };
    const onError = (err: Error) => {
      cleanup();
      reject(err);
    };
    req.on('data', onData);
    req.on('end', onEnd);
    req.on('error', onError);
  });
}

export function createSfuWebhookHandler(deps: SfuWebhookDeps): RequestHandler {
  const { clock, logger } = deps;
  const limit = deps.maxBodyBytes ?? WEBHOOK_MAX_BODY_BYTES;
  const receiver = new WebhookReceiver(deps.apiKey, deps.apiSecret);
  const counter = new Counter({
    name: 'matrixrtc_sfu_webhooks_total',
    help: 'SFU webhook requests received on /sfu_webhook, by result',
    labelNames: ['result'],
    registers: [deps.metrics],
  });
  let lastLogAt = -Infinity;
  let unlogged = 0;

  function reject(res: Response, status: number, result: WebhookResult, detail: string, close = false): void {
    counter.inc({ result });
    unlogged++;
    if (clock.now() - lastLogAt >= REJECTION_LOG_INTERVAL_MS) {
      logger.warn(
        { result, detail, rejectedSinceLastLog: unlogged },
        'SFU webhook rejected (check that the SFU`s webhook.api_key is this service`s LIVEKIT_KEY with the same secret)',
      );
      lastLogAt = clock.now();
      unlogged = 0;
    }
    if (close) res.set('Connection', 'close');
    if (status === 405) res.set('Allow', 'POST');
    res.status(status).end();
  }

  async function handle(req: Request, res: Response): Promise<void> {
    if (req.method !== 'POST') return reject(res, 405, 'wrong_method', req.method, true);
    const declared = Number(req.get('content-length') ?? NaN);
    if (declared > limit) return reject(res, 413, 'too_large', `Content-Length ${declared} > ${limit}`, true);
    let body: string;
    try {
      body = await readBounded(req, limit);
    } catch (err) {
      if (err instanceof TooLarge) return reject(res, 413, 'too_large', `body over ${limit} bytes`, true);
      return reject(res, 400, 'bad_body', (err as Error).message, true);
    }
    let event;
    try {
      event = await receiver.receive(body, req.get('authorization'));
    } catch (err) {
      // Unsigned-but-well-formed tells a wrong key from junk.
      const wellFormed = await receiver.receive(body, undefined, true).then(
        () => true,
        () => false,
      );
      if (wellFormed) return reject(res, 401, 'bad_signature', (err as Error).message);
      return reject(res, 400, 'bad_body', 'not a LiveKit webhook event');
    }
    counter.inc({ result: 'accepted' });
    const room = event.room?.name;
    const p = event.participant;
    if (room && p?.identity) {
      if (event.event === 'participant_joined') deps.onEvent(room, p.identity, 'joined', false);
      else if (event.event === 'participant_left' || event.event === 'participant_connection_aborted') {
        const intentional = p.disconnectReason === DisconnectReason.CLIENT_INITIATED;
        deps.onEvent(room, p.identity, event.event === 'participant_left' ? 'left' : 'aborted', intentional);
      }
    } else if (room && event.event === 'room_finished') deps.onRoomFinished?.(room);
    res.status(200).end();
  }

  return (req, res) => {
    handle(req, res).catch((err: unknown) => {
      logger.error({ err: (err as Error).message }, 'SFU webhook handler failed');
      if (!res.headersSent) res.status(500).end();
    });
  };
}
