/**
 * The signalling edge: HTTP routes `/rtc/validate`, `/rtc/v1`, `/rtc/v1/validate` and the
 * WebSocket upgrade on `/rtc` (protocol v0). Authenticates before upgrading and answers
 * refusals with LiveKit's status and plain text; after the upgrade it frames SignalRequest /
 * SignalResponse (binary protobuf, or protojson once the client sends text), keeps the socket
 * alive with WS pings, hands `refresh_token`s out and maps socket close to a participant leave.
 * Nothing deeper sees express or ws. `attachSignalling(deps)` returns `close()`.
 */
import type { IncomingMessage, Server } from 'node:http';
import type { Duplex } from 'node:stream';
import type { Express, Request, Response } from 'express';
import { WebSocketServer, type RawData, type WebSocket } from 'ws';
import {
  ClientInfo,
  ClientInfo_SDK,
  DisconnectReason,
  LeaveRequest,
  LeaveRequest_Action,
  SignalRequest,
  SignalResponse,
} from '@livekit/protocol';
import type { Logger } from '../../common/logger.ts';
import type { Clock, TimerHandle } from '../../common/clock.ts';
import { AuthError, mintRefreshToken, permissionsOf, verifyJoinToken, type JoinClaims } from './auth.ts';
import { JoinRefusedError, type ParticipantSession, type RoomManager } from '../rtc/room-manager.ts';
import type { JoinRequest } from '../rtc/types.ts';
import type { SfuConfig } from '../config.ts';
import type { GuardMetrics } from '../metrics.ts';
import { createMessageRate } from './rate.ts';

export const WS_PING_INTERVAL_MS = 10_000;
/** A client that sent nothing (not even its pings, every 5 s) for this long is gone. */
export const CLIENT_SILENCE_TIMEOUT_MS = 30_000;
/** LiveKit refreshes tokens every 5 minutes. */
export const TOKEN_REFRESH_INTERVAL_MS = 5 * 60_000;
/** Refused before the upgrade: our signal_limits.max_connections_per_ip. */
export const TOO_MANY_CONNECTIONS = 'too many signalling connections from this address';

export interface SignallingDeps {
  /** Upgrade paths another listener on the server serves (the agent worker socket, `/agent`). */
  otherUpgradePaths?: readonly string[];
  keys: Readonly<Record<string, string>>;
  rooms: RoomManager;
  logger: Logger;
  clock: Clock;
  limits: Pick<SfuConfig, 'limit' | 'signal_limits'>;
  metrics?: GuardMetrics | undefined;
  /**
   * Clustered nodes (sfu/routing/cluster.ts): where an authenticated upgrade for a room goes.
   * `local` joins here; `handled` means the cluster layer relayed or answered it.
   */
  route?: ((room: string, req: IncomingMessage, socket: Duplex, head: Buffer, wss: WebSocketServer) => Promise<RouteOutcome>) | undefined;
  /** A relay from another node of the cluster: counted per client address, never routed again. */
  isRelayed?: ((req: IncomingMessage) => boolean) | undefined;
  /**
   * Clustered nodes: `/rtc/validate` for a room hosted on another node is answered by that node
   * (its admission checks), or undefined when the room is here or nowhere.
   */
  validateElsewhere?: ((room: string, pathAndQuery: string, authorization: string | undefined) => Promise<{ status: number; body: string } | undefined>) | undefined;
  /** While true (draining) no new signalling connection is taken. */
  draining?: (() => boolean) | undefined;
}

export type RouteOutcome = { kind: 'local' } | { kind: 'handled' } | { kind: 'refused'; status: number; message: string };
/** Refused while the node drains (SIGTERM): the client's retry goes to another node. */
export const NODE_DRAINING = 'this node is shutting down; reconnect through another node';

/** Why a connect was refused: HTTP status + LiveKit's text. */
interface Refusal {
  status: number;
  message: string;
}

function refusalOf(err: unknown): Refusal | undefined {
  if (err instanceof AuthError || err instanceof JoinRefusedError) return { status: err.status, message: err.message };
  return undefined;
}

function truthy(v: string | null): boolean {
  return v === '1' || v === 'true';
}

function tokenOf(url: URL, authorization: string | undefined): string {
  const fromQuery = url.searchParams.get('access_token');
  if (fromQuery) return fromQuery;
  if (authorization) {
    if (!authorization.startsWith('Bearer ')) {
      throw new AuthError(401, 'invalid authorization header. Must start with Bearer ');
    }
    return authorization.slice('Bearer '.length).trim();
  }
  throw new AuthError(401, 'invalid authorization token: no token');
}

const SDK_NAMES: Record<string, ClientInfo_SDK> = {
  js: ClientInfo_SDK.JS,
  swift: ClientInfo_SDK.SWIFT,
  android: ClientInfo_SDK.ANDROID,
  flutter: ClientInfo_SDK.FLUTTER,
  go: ClientInfo_SDK.GO,
  unity: ClientInfo_SDK.UNITY,
  reactnative: ClientInfo_SDK.REACT_NATIVE,
  rust: ClientInfo_SDK.RUST,
  python: ClientInfo_SDK.PYTHON,
  cpp: ClientInfo_SDK.CPP,
  unityweb: ClientInfo_SDK.UNITY_WEB,
  node: ClientInfo_SDK.NODE,
};

export function clientInfoOf(q: URLSearchParams, address: string): ClientInfo {
  return new ClientInfo({
    sdk: SDK_NAMES[(q.get('sdk') ?? '').toLowerCase().replace(/[-_]/g, '')] ?? ClientInfo_SDK.UNKNOWN,
    version: q.get('version') ?? '',
    protocol: Number.parseInt(q.get('protocol') ?? '0', 10) || 0,
    os: q.get('os') ?? '',
    osVersion: q.get('os_version') ?? '',
    deviceModel: q.get('device_model') ?? '',
    browser: q.get('browser') ?? '',
    browserVersion: q.get('browser_version') ?? '',
    network: q.get('network') ?? '',
    address,
  });
}

interface Authorized {
  claims: JoinClaims;
  req: JoinRequest;
  reconnect: boolean;
}

async function authorize(deps: SignallingDeps, url: URL, req: IncomingMessage, clientAddress?: string): Promise<Authorized> {
  const token = tokenOf(url, req.headers.authorization);
  const claims = await verifyJoinToken(token, deps.keys, deps.clock.now());
  const q = url.searchParams;
  const joinReq: JoinRequest = {
    room: claims.room,
    identity: claims.identity,
    name: claims.name,
    metadata: claims.metadata,
    attributes: claims.attributes,
    permissions: permissionsOf(claims.video),
    autoSubscribe: q.has('auto_subscribe') ? truthy(q.get('auto_subscribe')) : true,
    clientInfo: clientInfoOf(q, clientAddress ?? req.socket.remoteAddress ?? ''),
    issuedAt: claims.issuedAt,
    roomAgents: claims.roomAgents,
  };
  return { claims, req: joinReq, reconnect: truthy(q.get('reconnect')) };
}

function cors(res: Response): void {
  res.set('Access-Control-Allow-Origin', '*');
}

/** HTTP routes; register before the app's 404 handling. */
export function registerSignalRoutes(app: Express, deps: SignallingDeps): void {
  const notFound = (_req: Request, res: Response) => {
    // Must not say "requested room does not exist": clients then stop instead of falling back to v0.
    cors(res);
    res.status(404).type('text/plain').send('protocol v1 signalling is not supported; use /rtc');
  };
  app.all('/rtc/v1', notFound);
  app.all('/rtc/v1/validate', notFound);
  app.options('/rtc/validate', (_req, res) => {
    cors(res);
    res.set('Access-Control-Allow-Headers', 'Authorization');
    res.status(204).end();
  });
  const validate = async (req: Request, res: Response) => {
    cors(res);
    try {
      const url = new URL(req.originalUrl, 'http://localhost');
      const { req: joinReq } = await authorize(deps, url, req);
      const elsewhere = await deps.validateElsewhere?.(joinReq.room, req.originalUrl, req.headers.authorization);
      if (elsewhere) {
        res.status(elsewhere.status).type('text/plain').send(elsewhere.body);
        return;
      }
      deps.rooms.checkJoin(joinReq);
      res.status(200).type('text/plain').send('success');
    } catch (err) {
      const refusal = refusalOf(err);
      if (!refusal) {
        deps.logger.error({ err }, 'validate failed');
        res.status(500).type('text/plain').send('internal error');
        return;
      }
      res.status(refusal.status).type('text/plain').send(refusal.message);
    }
  };
  app.get('/rtc/validate', (req, res) => {
    void validate(req, res);
  });
}

/**
 * Answers an upgrade whose authentication or admission threw: a refusal (AuthError,
 * JoinRefusedError) with its status and text, logged at info; anything else with 500, logged as
 * an error. Shared by the /rtc and /agent upgrades.
 */
export function answerFailedUpgrade(socket: Duplex, err: unknown, logger: Logger, messages: { refused: string; failed: string }): void {
  const refusal = refusalOf(err);
  if (refusal) {
    logger.info({ status: refusal.status, reason: refusal.message }, messages.refused);
    writeHttpError(socket, refusal.status, refusal.message);
  } else {
    logger.error({ err }, messages.failed);
    writeHttpError(socket, 500, 'internal error');
  }
}

export function writeHttpError(socket: Duplex, status: number, message: string): void {
  const body = Buffer.from(message);
  const reason = {
    400: 'Bad Request',
    401: 'Unauthorized',
    404: 'Not Found',
    429: 'Too Many Requests',
    500: 'Internal Server Error',
    503: 'Service Unavailable',
  }[status];
  if (socket.destroyed) return;
  socket.end(
    `HTTP/1.1 ${status} ${reason ?? 'Error'}\r\n` +
      'Content-Type: text/plain; charset=utf-8\r\n' +
      'Access-Control-Allow-Origin: *\r\n' +
      `Content-Length: ${body.length}\r\nConnection: close\r\n\r\n${message}`,
  );
}

/** One signalling WebSocket: framing, keepalive, refresh tokens, dispatch. */
function runSocket(ws: WebSocket, auth: Authorized, deps: SignallingDeps): void {
  const log = deps.logger.child({ room: auth.req.room, identity: auth.req.identity });
  let json = false;
  let closed = false;
  let pingTimer: TimerHandle | undefined;
  let refreshTimer: TimerHandle | undefined;

  const send = (msg: SignalResponse) => {
    if (closed || ws.readyState !== ws.OPEN) return;
    ws.send(json ? msg.toJsonString() : msg.toBinary());
  };

  const stop = () => {
    closed = true;
    deps.clock.clearTimeout(pingTimer);
    deps.clock.clearTimeout(refreshTimer);
  };

  if (auth.reconnect) {
    // Sessions are not kept for resume: tell the client to rejoin from scratch.
    send(
      new SignalResponse({
        message: {
          case: 'leave',
          value: new LeaveRequest({ reason: DisconnectReason.STATE_MISMATCH, action: LeaveRequest_Action.RECONNECT }),
        },
      }),
    );
    stop();
    ws.close(1000);
    return;
  }

  let session: ParticipantSession;
  try {
    session = deps.rooms.join(auth.req, {
      send,
      close: () => {
        stop();
        if (ws.readyState === ws.OPEN) ws.close(1000);
      },
    });
  } catch (err) {
    log.info({ err }, 'join refused after upgrade');
    send(
      new SignalResponse({
        message: {
          case: 'leave',
          value: new LeaveRequest({ reason: DisconnectReason.JOIN_FAILURE, action: LeaveRequest_Action.DISCONNECT }),
        },
      }),
    );
    stop();
    ws.close(1000);
    return;
  }

  let lastHeard = deps.clock.now();
  ws.on('pong', () => {
    lastHeard = deps.clock.now();
  });
  const ping = () => {
    if (closed) return;
    if (deps.clock.now() - lastHeard > CLIENT_SILENCE_TIMEOUT_MS) {
      log.info('client silent too long; closing its signal connection');
      ws.terminate();
      return;
    }
    ws.ping();
    pingTimer = deps.clock.setTimeout(ping, WS_PING_INTERVAL_MS);
  };
  pingTimer = deps.clock.setTimeout(ping, WS_PING_INTERVAL_MS);

  const refresh = async () => {
    if (closed) return;
    const secret = deps.keys[auth.claims.apiKey];
    if (secret !== undefined) {
      try {
        const token = await mintRefreshToken(auth.claims, secret, deps.clock.now());
        send(new SignalResponse({ message: { case: 'refreshToken', value: token } }));
      } catch (err) {
        log.warn({ err }, 'minting a refresh token failed');
      }
    }
    if (!closed) refreshTimer = deps.clock.setTimeout(() => void refresh(), TOKEN_REFRESH_INTERVAL_MS);
  };
  void refresh();

  /** Never lets a fault out of a socket event handler, where it would reach the process. */
  const failSession = (err: unknown) => {
    try {
      session.fail(err);
    } catch (closeErr) {
      log.error({ err, closeErr }, 'closing a failed participant failed too');
      ws.terminate();
    }
  };
  const rate = createMessageRate(deps.clock, deps.limits.signal_limits);
  const onMessage = (data: RawData, isBinary: boolean) => {
    lastHeard = deps.clock.now();
    if (closed) return;
    if (!rate.take()) {
      session.closeForLimit('signal_limits.messages_per_second', 'signal messages faster than signal_limits.messages_per_second');
      return;
    }
    let req: SignalRequest;
    try {
      const buf = Array.isArray(data) ? Buffer.concat(data) : Buffer.from(data as ArrayBuffer);
      if (isBinary) req = SignalRequest.fromBinary(buf);
      else {
        json = true;
        req = SignalRequest.fromJsonString(buf.toString('utf8'), { ignoreUnknownFields: true });
      }
    } catch (err) {
      log.debug({ err }, 'unparseable signal frame');
      return;
    }
    session.handleRequest(req);
  };
  ws.on('message', (data: RawData, isBinary: boolean) => {
    try {
      onMessage(data, isBinary);
    } catch (err) {
      // One participant's fault ends that participant only (logged and counted by `fail`).
      failSession(err);
    }
  });
  ws.on('close', () => {
    const wasClosed = closed;
    stop();
    if (wasClosed) return;
    try {
      session.handleDisconnect();
    } catch (err) {
      failSession(err);
    }
  });
  ws.on('error', (err) => log.debug({ err }, 'signal socket error'));
}

/** Hooks the `/rtc` upgrade into an HTTP server. */
export function attachSignalling(server: Server, deps: SignallingDeps): { close(): void } {
  const wss = new WebSocketServer({ noServer: true, maxPayload: deps.limits.limit.signal_message_size_limit });
  const perIp = new Map<string, number>();
  const maxPerIp = deps.limits.signal_limits.max_connections_per_ip;
  const onUpgrade = (req: IncomingMessage, socket: Duplex, head: Buffer) => {
    if (deps.otherUpgradePaths?.includes(new URL(req.url ?? '/', 'http://localhost').pathname.replace(/\/+$/, ''))) return;
    // Node drops its own socket error handler for upgrades: without this a reset during
    // authentication would be an uncaught 'error' event. `ws` adds its own once upgraded.
    const onSocketError = (err: Error) => deps.logger.debug({ err }, 'signal socket error before upgrade');
    socket.on('error', onSocketError);
    const relayed = deps.isRelayed?.(req) ?? false;
    const forwarded = relayed ? req.headers['x-forwarded-for'] : undefined;
    const ip = typeof forwarded === 'string' && forwarded ? forwarded : (req.socket.remoteAddress ?? '');
    if (deps.draining?.() && !relayed) {
      writeHttpError(socket, 503, NODE_DRAINING);
      return;
    }
    const open = perIp.get(ip) ?? 0;
    if (maxPerIp > 0 && open >= maxPerIp) {
      deps.metrics?.refused('signal_limits.max_connections_per_ip');
      deps.logger.debug({ ip, open }, 'signal connection refused: signal_limits.max_connections_per_ip');
      writeHttpError(socket, 429, TOO_MANY_CONNECTIONS);
      return;
    }
    perIp.set(ip, open + 1);
    socket.once('close', () => {
      const n = (perIp.get(ip) ?? 1) - 1;
      if (n <= 0) perIp.delete(ip);
      else perIp.set(ip, n);
    });
    const url = new URL(req.url ?? '/', 'http://localhost');
    const path = url.pathname.replace(/\/+$/, '');
    if (path !== '/rtc') {
      writeHttpError(socket, 404, path.startsWith('/rtc/v1') ? 'protocol v1 signalling is not supported; use /rtc' : 'not found');
      return;
    }
    authorize(deps, url, req, relayed ? ip : undefined)
      .then(async (auth) => {
        if (!auth.reconnect && deps.route && !relayed) {
          const routed = await deps.route(auth.req.room, req, socket, head, wss);
          if (routed.kind === 'handled') {
            socket.off('error', onSocketError);
            return;
          }
          if (routed.kind === 'refused') throw new JoinRefusedError(routed.status, routed.message);
        }
        if (!auth.reconnect) deps.rooms.checkJoin(auth.req);
        if (socket.destroyed) return;
        wss.handleUpgrade(req, socket, head, (ws) => {
          socket.off('error', onSocketError);
          runSocket(ws, auth, deps);
        });
      })
      .catch((err: unknown) =>
        answerFailedUpgrade(socket, err, deps.logger, { refused: 'signal connection refused', failed: 'signal upgrade failed' }),
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
