/**
 * A raw LiveKit signalling client for tests: a `ws` WebSocket speaking SignalRequest /
 * SignalResponse frames (@livekit/protocol), with `next(case)` waiting for the next unconsumed
 * message of a kind, and the status and body of a refused upgrade.
 */
import WebSocket from 'ws';
import { SessionDescription, SignalRequest, SignalResponse } from '@livekit/protocol';
import { waitFor } from './wait.ts';
import type { TestSfu } from './sfu-harness.ts';

export type Case = NonNullable<SignalResponse['message']['case']>;

export interface RawClient {
  ws: WebSocket;
  messages: SignalResponse[];
  textFrames: number;
  next<C extends Case>(c: C, timeoutMs?: number): Promise<Extract<SignalResponse['message'], { case: C }>['value']>;
  send(req: SignalRequest, asJson?: boolean): void;
  closed: Promise<void>;
}

export async function openRaw(url: string): Promise<RawClient> {
  const ws = new WebSocket(url);
  const messages: SignalResponse[] = [];
  const consumed = new Set<number>();
  const client: RawClient = {
    ws,
    messages,
    textFrames: 0,
    async next(c, timeoutMs = 5000) {
      const found = await waitFor(
        `signal message ${c}`,
        () => {
          for (let i = 0; i < messages.length; i++) {
            if (!consumed.has(i) && messages[i]!.message.case === c) {
              consumed.add(i);
              return messages[i]!;
            }
          }
          return undefined;
        },
        { timeoutMs },
      );
      return found.message.value as never;
    },
    send(req, asJson = false) {
      ws.send(asJson ? req.toJsonString() : req.toBinary());
    },
    closed: new Promise((resolve) => ws.once('close', () => resolve())),
  };
  ws.on('message', (data: Buffer, isBinary: boolean) => {
    if (isBinary) messages.push(SignalResponse.fromBinary(new Uint8Array(data)));
    else {
      client.textFrames++;
      messages.push(SignalResponse.fromJsonString(data.toString('utf8'), { ignoreUnknownFields: true }));
    }
  });
  await new Promise<void>((resolve, reject) => {
    ws.once('open', () => resolve());
    ws.once('error', reject);
    ws.once('unexpected-response', (_req, res) => reject(new Error(`HTTP ${res.statusCode}`)));
  });
  return client;
}

/** Status and body of a refused WebSocket upgrade. */
export async function upgradeRefusal(url: string): Promise<{ status: number; body: string; cors: string | undefined }> {
  return await new Promise((resolve, reject) => {
    const ws = new WebSocket(url);
    ws.once('open', () => {
      ws.close();
      reject(new Error('upgrade unexpectedly accepted'));
    });
    ws.once('unexpected-response', (_req, res) => {
      let body = '';
      res.on('data', (c: Buffer) => (body += c.toString('utf8')));
      res.on('end', () =>
        resolve({
          status: res.statusCode ?? 0,
          body,
          cors: res.headers['access-control-allow-origin'] as string | undefined,
        }),
      );
    });
    ws.once('error', () => undefined);
  });
}

export function rtcUrl(sfu: TestSfu, token: string, extra = ''): string {
  return `${sfu.wsUrl}/rtc?access_token=${encodeURIComponent(token)}&protocol=16&sdk=js&version=2.23.0${extra}`;
}

/** Joins `room` as `identity` (a token from the harness) and waits for the JoinResponse; `sid` is the participant's. */
export async function joinRaw(sfu: TestSfu, identity: string, room = 'test-room'): Promise<RawClient & { sid: string }> {
  const client = await openRaw(rtcUrl(sfu, await sfu.token(identity, { roomJoin: true, room })));
  const join = await client.next('join');
  return Object.assign(client, { sid: join.participant!.sid });
}

/** A publisher offer as a client's signalling sends it. */
export function offerRequest(sdp: string): SignalRequest {
  return new SignalRequest({ message: { case: 'offer', value: new SessionDescription({ type: 'offer', sdp, id: 1 }) } });
}

/** The session lines of a minimal offer; then one or more `AUDIO_M_LINE` + `a=mid:N`. */
export const SDP_HEAD = 'v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n';
/** A sendonly Opus m-line with dummy ICE credentials and fingerprint (no a=mid). */
export const AUDIO_M_LINE =
  'm=audio 9 UDP/TLS/RTP/SAVPF 111\r\nc=IN IP4 0.0.0.0\r\na=ice-ufrag:abcd\r\na=ice-pwd:abcdefghijklmnopqrstuvwx\r\n' +
  `a=fingerprint:sha-256 ${'AB:'.repeat(31)}AB\r\na=setup:actpass\r\na=rtcp-mux\r\na=sendonly\r\na=rtpmap:111 opus/48000/2\r\n`;

