/**
 * Token-endpoint bodies (bridge/token/body.ts): every shape the lk-jwt-service and MSC4195
 * endpoints decode, fed Element Call's recorded bodies with fields replaced by any JSON value,
 * the same bodies mutated as bytes, and arbitrary JSON. Bad input must be 400 M_NOT_JSON
 * (MatrixError), nothing else. The endpoints' next steps reach the network (OpenID look-ups),
 * so this target stops at the decoder on purpose: fuzzing them would send requests to whatever
 * server names the generator made up.
 */
import fc from 'fast-check';
import { decodeBody, GET_TOKEN_SPEC, PROXIED_SPEC, SFU_GET_SPEC } from '../../../bridge/token/body.ts';
import { MatrixError } from '../../../bridge/token/errors.ts';
import { jsonWithReplacedFields, mutatedBytes, type FuzzTarget } from '../target.ts';

const openid = { access_token: 'syt_x', token_type: 'Bearer', matrix_server_name: 'localhost', expires_in: 3600 };
/** Element Call's bodies as recorded (token-service-requests.md), token redacted. */
const CORPUS: Record<string, unknown>[] = [
  { room: '!SDzBAImFdwOuXNfkSU:localhost', openid_token: openid, device_id: 'BKZJRNQWUX' },
  {
    room: '!SDzBAImFdwOuXNfkSU:localhost',
    openid_token: openid,
    device_id: 'BKZJRNQWUX',
    delay_id: 'syd_QYLWXsKTljYELgiJrzIA',
    delay_timeout: 18000,
    delay_cs_api_url: 'http://127.0.0.1:8008',
  },
  {
    room_id: '!uMefGjDnOnWdSUpDAr:localhost',
    slot_id: 'm.call#ROOM',
    openid_token: openid,
    member: { id: 'e4398577-e864-447f-b362-d27b456c39f0', claimed_user_id: '@orange:localhost', claimed_device_id: 'XJLQRFYKQT' },
  },
  { url: 'wss://sfu.example.org', room_id: '!r:localhost', slot_id: 'm.call#ROOM', member_id: 'm1', delay_id: 'd', delay_timeout: 10000 },
  { url: 'wss://sfu.example.org', user_id: '@u:remote', room_id: '!r:localhost', slot_id: 'm.call#ROOM', member: { id: 'x', claimed_device_id: 'D' } },
];
const SPECS = [SFU_GET_SPEC, GET_TOKEN_SPEC, PROXIED_SPEC] as const;

type Input = { spec: number; body: Uint8Array };

const asBytes = (v: unknown) => Buffer.from(JSON.stringify(v) ?? 'null');

export const tokenBody: FuzzTarget<Input> = {
  name: 'token-body',
  description: 'token-endpoint bodies (/sfu/get, /get_token, /delegate_delayed_leave, MSC4195) into the body decoder',
  async: false,
  arbitrary() {
    const body = fc.oneof(
      { weight: 4, arbitrary: jsonWithReplacedFields(CORPUS).map(asBytes) },
      { weight: 3, arbitrary: mutatedBytes(CORPUS.map(asBytes)) },
      { weight: 2, arbitrary: fc.jsonValue({ maxDepth: 4 }).map(asBytes) },
      { weight: 1, arbitrary: fc.uint8Array({ maxLength: 512 }) },
    );
    return fc.record({ spec: fc.integer({ min: 0, max: SPECS.length - 1 }), body });
  },
  async setup() {
    let decoded = 0;
    return {
      one({ spec, body }) {
        decodeBody(Buffer.from(body), SPECS[spec]!);
        decoded++;
      },
      expected: (err) => err instanceof MatrixError && err.status === 400,
      async teardown() {},
      stats: () => ({ decoded }),
    };
  },
};
