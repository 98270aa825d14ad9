/**
 * The agent worker edge: the `/agent` WebSocket LiveKit Agents workers connect to (livekit
 * pkg/service/agentservice.go AgentSocketUpgrader + wsprotocol.go). Before the upgrade it
 * authenticates: a token from `Authorization: Bearer` (or `access_token`), verified as every
 * SFU token is, whose `video.agent` grant is true; anything else is refused 401 with LiveKit's
 * plain text ("permissions denied" for a valid token without the grant). After the upgrade it
 * decodes WorkerMessages (binary protobuf, or protojson text, answered in kind as LiveKit
 * does) and hands them to the dispatcher's `WorkerSession`; a frame that does not decode, an
 * unknown or out-of-turn signal closes the connection, which is LiveKit's answer to a bad
 * worker message. Frames are bounded by `maxPayload`. `attachAgentSocket(server, deps)` hooks
 * the upgrade; `close()` unhooks it and ends the connections.
 */
import type { IncomingMessage, Server } from 'node:http';
import type { Duplex } from 'node:stream';
import { WorkerMessage, type ServerMessage } from '@livekit/protocol';
import { WebSocketServer, type RawData, type WebSocket } from 'ws';
import type { Clock } from '../../common/clock.ts';
import type { Logger } from '../../common/logger.ts';
import { AuthError, verifyAccessToken } from '../access-token.ts';
import { answerFailedUpgrade } from '../signal/signalling.ts';
import type { AgentDispatcher } from './dispatcher.ts';
import { WorkerProtocolError } from './worker.ts';

export const AGENT_PATH = '/agent';

export interface AgentSocketDeps {
  dispatcher: Pick<AgentDispatcher, 'openWorker'>;
  keys: Readonly<Record<string, string>>;
  clock: Clock;
  logger: Logger;
  /** Largest frame accepted (bytes). */
  maxPayload: number;
}

/** The API key of a token carrying the agent grant; throws AuthError (LiveKit's status + text). */
export async function authorizeWorker(req: IncomingMessage, url: URL, keys: Readonly<Record<string, string>>, nowMs: number): Promise<string> {
  const auth = req.headers.authorization;
  let token = url.searchParams.get('access_token') ?? '';
  if (auth) {
    if (!auth.startsWith('Bearer ')) throw new AuthError(401, 'invalid authorization header. Must start with Bearer ');
    token = auth.slice('Bearer '.length).trim();
  }
  // No token reaches the handler without claims: LiveKit answers ErrPermissionDenied.
  if (!token) throw new AuthError(401, 'permissions denied');
  const { apiKey, payload } = await verifyAccessToken(token, keys, nowMs);
  const video = payload.video as { agent?: unknown } | undefined;
  if (!video || video.agent !== true) throw new AuthError(401, 'permissions denied');
  return apiKey;
}

function decode(data: RawData, isBinary: boolean): WorkerMessage {
  const buf = Array.isArray(data) ? Buffer.concat(data) : Buffer.from(data as ArrayBuffer);
  if (isBinary) return WorkerMessage.fromBinary(new Uint8Array(buf.buffer, buf.byteOffset, buf.byteLength));
  return WorkerMessage.fromJsonString(buf.toString('utf8'));
}

function runWorker(ws: WebSocket, apiKey: string, deps: AgentSocketDeps): void {
  const log = deps.logger;
  let json = false;
  const session = deps.dispatcher.openWorker(
    {
      send(msg: ServerMessage) {
        if (ws.readyState !== ws.OPEN) return;
        ws.send(json ? msg.toJsonString() : msg.toBinary());
      },
      close: () => ws.terminate(),
    },
    apiKey,
  );
  ws.on('message', (data, isBinary) => {
    let msg: WorkerMessage;
    try {
      msg = decode(data, isBinary);
    } catch (err) {
      log.warn({ err: (err as Error).message }, 'error reading from agent worker websocket: closing');
      ws.terminate();
      return;
    }
    json = !isBinary;
    try {
      session.handle(msg);
    } catch (err) {
      if (err instanceof WorkerProtocolError) log.warn({ err: err.message }, 'unable to handle worker signal: closing');
      else log.error({ err }, 'agent worker signal failed: closing');
      ws.terminate();
    }
  });
  ws.on('close', () => session.closed());
  ws.on('error', (err) => log.debug({ err }, 'agent worker socket error'));
}

export function attachAgentSocket(server: Server, deps: AgentSocketDeps): { close(): void } {
  const wss = new WebSocketServer({ noServer: true, maxPayload: deps.maxPayload });
  const onUpgrade = (req: IncomingMessage, socket: Duplex, head: Buffer) => {
    const url = new URL(req.url ?? '/', 'http://localhost');
    if (url.pathname.replace(/\/+$/, '') !== AGENT_PATH) return;
    const onSocketError = (err: Error) => deps.logger.debug({ err }, 'agent socket error before upgrade');
    socket.on('error', onSocketError);
    authorizeWorker(req, url, deps.keys, deps.clock.now())
      .then((apiKey) => {
        if (socket.destroyed) return;
        wss.handleUpgrade(req, socket, head, (ws) => {
          socket.off('error', onSocketError);
          runWorker(ws, apiKey, deps);
        });
      })
      .catch((err: unknown) =>
        answerFailedUpgrade(socket, err, deps.logger, { refused: 'agent worker refused', failed: 'agent worker upgrade failed' }),
      );
  };
  server.on('upgrade', onUpgrade);
  return {
    close() {
      server.off('upgrade', onUpgrade);
      for (const ws of wss.clients) ws.terminate();
      wss.close();
    },
  };
}
