/**
 * What a LiveKit webhook looks like on the wire (protocol webhook/url_notifier.go, consts.go):
 * the `WebhookEvent` message built from an `SfuEvent`, its protojson body (camelCase, int64 as
 * strings, unpopulated fields left out) and the `Authorization` JWT (no `Bearer `): HS256,
 * `iss` = API key, valid 5 minutes, claim `sha256` = padded base64 of SHA-256 over the body.
 */
import { createHash, randomInt } from 'node:crypto';
import { WebhookEvent } from '@livekit/protocol';
import { SignJWT } from 'jose';
import type { SfuEvent } from '../room-service-api.ts';

export const WEBHOOK_CONTENT_TYPE = 'application/webhook+json';
export const WEBHOOK_TOKEN_TTL_SECONDS = 5 * 60;

const BASE62 = '0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz';

/** LiveKit-style event id: `EV_` and 12 base62 characters. */
export function newEventId(): string {
  let id = 'EV_';
  for (let i = 0; i < 12; i++) id += BASE62[randomInt(BASE62.length)];
  return id;
}

/** A detached copy (later changes to the session's objects do not leak into the event). */
export function toWebhookEvent(event: SfuEvent, nowMs: number, id: string = newEventId()): WebhookEvent {
  const message = new WebhookEvent({
    event: event.type,
    room: event.room,
    id,
    createdAt: BigInt(Math.floor(nowMs / 1000)),
  });
  if ('participant' in event) message.participant = event.participant;
  if ('track' in event) message.track = event.track;
  return message.clone();
}

export function webhookBody(event: WebhookEvent): string {
  return event.toJsonString();
}

export function bodySha256(body: string): string {
  return createHash('sha256').update(body, 'utf8').digest('base64');
}

export async function signWebhook(
  body: string,
  key: { apiKey: string; secret: Uint8Array },
  nowMs: number,
): Promise<string> {
  const now = Math.floor(nowMs / 1000);
  return await new SignJWT({ sha256: bodySha256(body) })
    .setProtectedHeader({ alg: 'HS256', typ: 'JWT' })
    .setIssuer(key.apiKey)
    .setNotBefore(now)
    .setExpirationTime(now + WEBHOOK_TOKEN_TTL_SECONDS)
    .sign(key.secret);
}
