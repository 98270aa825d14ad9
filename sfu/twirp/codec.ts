/**
 * The two Twirp body encodings. JSON requests are protojson with either field naming (the node
 * SDK sends camelCase, Go's protojson snake_case), unknown fields ignored as Twirp does; JSON
 * answers use proto (snake_case) names, emit unpopulated fields and write int64 as strings.
 * `application/protobuf` is binary both ways. Decoding failures are Twirp `malformed`.
 */
import { BinaryReader, type JsonValue, type Message, type MessageType } from '@bufbuild/protobuf';
import { TwirpError } from './errors.ts';

export type Encoding = 'json' | 'protobuf';

export const JSON_WRITE_OPTIONS = { useProtoFieldName: true, emitDefaultValues: true } as const;

/** Which encoding a Content-Type asks for, or undefined when Twirp would refuse it. */
export function encodingOf(contentType: string | undefined): Encoding | undefined {
  const mime = (contentType ?? '').split(';')[0]!.trim().toLowerCase();
  if (mime === 'application/json') return 'json';
  if (mime === 'application/protobuf' || mime === 'application/x-protobuf') return 'protobuf';
  return undefined;
}

export interface Decoded<T extends Message<T>> {
  message: T;
  /** The parsed JSON object (JSON only), for fields our protocol version does not define. */
  json?: Record<string, unknown>;
}

export function decodeRequest<T extends Message<T>>(type: MessageType<T>, encoding: Encoding, body: Buffer): Decoded<T> {
  if (encoding === 'protobuf') {
    try {
      return { message: type.fromBinary(new Uint8Array(body.buffer, body.byteOffset, body.byteLength)) };
    } catch (err) {
      throw new TwirpError('malformed', `the protobuf request could not be decoded: ${(err as Error).message}`);
    }
  }
  let json: JsonValue;
  try {
    json = body.length === 0 ? {} : (JSON.parse(body.toString('utf8')) as JsonValue);
  } catch (err) {
    throw new TwirpError('malformed', `the json request could not be decoded: ${(err as Error).message}`);
  }
  if (json === null || typeof json !== 'object' || Array.isArray(json)) {
    throw new TwirpError('malformed', 'the json request could not be decoded: the body is not a JSON object');
  }
  try {
    return { message: type.fromJson(json, { ignoreUnknownFields: true }), json: json as Record<string, unknown> };
  } catch (err) {
    throw new TwirpError('malformed', `the json request could not be decoded: ${(err as Error).message}`);
  }
}

export function encodeResponse(message: Message, encoding: Encoding): { body: Buffer; contentType: string } {
  if (encoding === 'protobuf') {
    const bytes = message.toBinary();
    return { body: Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength), contentType: 'application/protobuf' };
  }
  return { body: Buffer.from(message.toJsonString(JSON_WRITE_OPTIONS)), contentType: 'application/json' };
}

/**
 * An int64 field our @livekit/protocol version does not define (e.g. RoomParticipantIdentity
 * `revoke_token_ts` = 3): read from the JSON object under either name, or from the binary
 * message's unknown fields. Undefined when absent or zero.
 */
export function readExtraInt64(
  decoded: Decoded<Message>,
  field: { no: number; jsonName: string; protoName: string },
): bigint | undefined {
  let value: bigint | undefined;
  if (decoded.json) {
    const raw = decoded.json[field.jsonName] ?? decoded.json[field.protoName];
    if (raw !== undefined && raw !== null) {
      try {
        value = BigInt(raw as string | number);
      } catch {
        throw new TwirpError('malformed', `the json request could not be decoded: ${field.protoName} is not an integer`);
      }
    }
  } else {
    const type = decoded.message.getType();
    for (const f of type.runtime.bin.listUnknownFields(decoded.message)) {
      if (f.no === field.no && f.wireType === 0) value = BigInt(new BinaryReader(f.data).int64());
    }
  }
  return value ? value : undefined;
}
