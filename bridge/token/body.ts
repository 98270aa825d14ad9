/**
 * Request bodies of the token endpoints: reading (bounded to 64 KiB) and decoding into typed
 * records with Go's `encoding/json` semantics for the fields we know (a JSON `null` or a missing
 * field is the zero value; a wrong type is an error). Unknown fields, at any depth, are ignored:
 * a documented difference from lk-jwt-service, whose strict decoder once turned a new client
 * field into an outage (lk-jwt-service issue #131).
 */
import type { Request } from 'express';
import { MatrixError, notJson } from './errors.ts';

/**
 * Largest token-endpoint body: a real one (OpenID token, member, delay fields) is under 2 KiB;
 * 64 KiB leaves room for long ids without letting a client make us buffer megabytes.
 */
export const MAX_BODY_BYTES = 64 * 1024;

export const bodyTooLarge = (): MatrixError => new MatrixError(413, 'M_TOO_LARGE', 'Request body too large');

/**
 * Reads the raw body: 413 M_TOO_LARGE as soon as it (or its declared Content-Length) is larger
 * than `limit`, leaving the rest unread (the listener's guardUnreadBodies drains or closes);
 * 400 M_NOT_JSON when the client goes away mid-body.
 */
export async function readBody(req: Request, limit = MAX_BODY_BYTES): Promise<Buffer> {
  // A body parser mounted earlier on the app may already have consumed the stream.
  const pre = (req as { body?: unknown }).body;
  if (Buffer.isBuffer(pre)) return pre;
  if (typeof pre === 'string') return Buffer.from(pre);
  if (pre !== undefined && pre !== null && typeof pre === 'object' && req.readableEnded) {
    return Buffer.from(JSON.stringify(pre));
  }
  const declared = Number(req.headers['content-length']);
  if (Number.isFinite(declared) && declared > limit) throw bodyTooLarge();
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let size = 0;
    const done = (err: MatrixError | undefined) => {
      req.off('data', onData);
      req.off('end', onEnd);
      req.off('error', onGone);
      req.off('close', onGone);
      if (err) {
        req.pause();
        reject(err);
      } else resolve(Buffer.concat(chunks));
    };
    const onData = (chunk: Buffer) => {
      size += chunk.length;
      if (size > limit) return done(bodyTooLarge());
      chunks.push(chunk);
    };
    const onEnd = () => done(undefined);
    const onGone = () => done(notJson());
    req.on('data', onData);
    req.once('end', onEnd);
    req.once('error', onGone);
    req.once('close', onGone);
  });
}

export type FieldType = 'string' | 'int' | Spec;
export interface Spec {
  readonly [field: string]: FieldType;
}

type Decoded<S extends Spec> = {
  [K in keyof S]: S[K] extends 'string' ? string : S[K] extends 'int' ? number : S[K] extends Spec ? Decoded<S[K]> : never;
};

function zero(type: FieldType): unknown {
  if (type === 'string') return '';
  if (type === 'int') return 0;
  return decodeObject({}, type);
}

function decodeObject<S extends Spec>(value: Record<string, unknown>, spec: S): Decoded<S> {
  const out: Record<string, unknown> = {};
  for (const [field, type] of Object.entries(spec)) {
    const v = value[field];
    if (v === undefined || v === null) {
      out[field] = zero(type);
    } else if (type === 'string') {
      if (typeof v !== 'string') throw notJson();
      out[field] = v;
    } else if (type === 'int') {
      if (typeof v !== 'number' || !Number.isSafeInteger(v)) throw notJson();
      out[field] = v;
    } else {
      if (typeof v !== 'object' || Array.isArray(v)) throw notJson();
      out[field] = decodeObject(v as Record<string, unknown>, type);
    }
  }
  return out as Decoded<S>;
}

/** Parses `raw` as a JSON object shaped by `spec`; anything else is 400 M_NOT_JSON. */
export function decodeBody<S extends Spec>(raw: Buffer, spec: S): Decoded<S> & { readonly present: ReadonlySet<string> } {
  let parsed: unknown;
  try {
    parsed = JSON.parse(raw.toString('utf8'));
  } catch {
    throw notJson();
  }
  if (parsed === null || typeof parsed !== 'object' || Array.isArray(parsed)) throw notJson();
  const obj = parsed as Record<string, unknown>;
  const present = new Set(Object.keys(obj).filter((k) => obj[k] !== null && obj[k] !== undefined));
  return Object.assign(decodeObject(obj, spec), { present });
}

export const OPENID_TOKEN_SPEC = {
  access_token: 'string',
  token_type: 'string',
  matrix_server_name: 'string',
  expires_in: 'int',
} as const satisfies Spec;

export const SFU_GET_SPEC = {
  room: 'string',
  openid_token: OPENID_TOKEN_SPEC,
  device_id: 'string',
  delay_id: 'string',
  delay_timeout: 'int',
  delay_cs_api_url: 'string',
} as const satisfies Spec;

export const GET_TOKEN_SPEC = {
  room_id: 'string',
  slot_id: 'string',
  openid_token: OPENID_TOKEN_SPEC,
  member: { id: 'string', claimed_user_id: 'string', claimed_device_id: 'string' },
  delay_id: 'string',
  delay_timeout: 'int',
  delay_cs_api_url: 'string',
} as const satisfies Spec;

/** Bodies of the homeserver-proxied (MSC4195) endpoints; both member shapes. */
export const PROXIED_SPEC = {
  server_name: 'string',
  url: 'string',
  user_id: 'string',
  room_id: 'string',
  slot_id: 'string',
  member: { id: 'string', claimed_user_id: 'string', claimed_device_id: 'string' },
  member_id: 'string',
  delay_id: 'string',
  delay_timeout: 'int',
} as const satisfies Spec;

export type SfuGetBody = ReturnType<typeof decodeBody<typeof SFU_GET_SPEC>>;
export type GetTokenBody = ReturnType<typeof decodeBody<typeof GET_TOKEN_SPEC>>;
export type ProxiedBody = ReturnType<typeof decodeBody<typeof PROXIED_SPEC>>;
