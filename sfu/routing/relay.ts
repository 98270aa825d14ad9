/**
 * The signalling relay between nodes: a client whose room lives on another node keeps its
 * WebSocket to the entry node, and the entry node opens a WebSocket to the hosting node's `/rtc`
 * with the client's own URL and token, then passes frames both ways unchanged (binary or JSON,
 * whatever the client speaks). The hosting node sees an ordinary client, so every signalling
 * rule lives in one place (sfu/signal/signalling.ts); media never passes here, the JoinResponse
 * already names the hosting node's rtc.node_ip and ports.
 *
 * Why a WebSocket and not a request/response channel over Redis: no Redis round trip per
 * message and no Redis on the path of a running call at all (a Redis outage leaves relayed
 * calls untouched), order and backpressure come with TCP, and the hosting node's death is seen
 * at once as the socket closing. The entry node then ends the client's session with a leave
 * asking to RECONNECT, so the client's next attempt (through the load balancer) lands on a live
 * node. See docs/cluster.md for the measurements.
 *
 * The upstream request carries `x-sfu-relay`: an HMAC of the URL and token under an API secret,
 * so the hosting node serves it here (never relays again) and counts its connection per client
 * address (`x-forwarded-for`) instead of per entry node.
 *
 * Lifecycle: `createRelayManager(deps)`; `relay(...)` per connection; `endTo(node)` when a host
 * is declared dead; `endAll()` on drain; `close()` on stop.
 */
import { createHmac, timingSafeEqual } from 'node:crypto';
import type { IncomingMessage } from 'node:http';
import type { Duplex } from 'node:stream';
import { WebSocket, type RawData, type WebSocketServer } from 'ws';
import { DisconnectReason, LeaveRequest, LeaveRequest_Action, SignalResponse } from '@livekit/protocol';
import type { Logger } from '../../common/logger.ts';
import type { Clock, TimerHandle } from '../../common/clock.ts';
import type { ClusterMetrics } from './metrics.ts';
import type { NodeInfo } from './types.ts';

export const RELAY_HEADER = 'x-sfu-relay';
export const FORWARDED_HEADER = 'x-forwarded-for';
/** The hosting node must answer the upgrade within this. */
export const RELAY_CONNECT_TIMEOUT_MS = 5000;
const PING_INTERVAL_MS = 10_000;
const SILENCE_TIMEOUT_MS = 30_000;
/** A client that reads nothing while its host keeps sending is cut off here, not buffered forever. */
const MAX_BUFFERED_BYTES = 8 << 20;

function mac(secret: string, url: string, authorization: string): string {
  return createHmac('sha256', secret).update(`${url}\n${authorization}`).digest('base64url');
}

/** True when `req` is a relay from another node of this cluster (HMAC under one of `keys`). */
export function isRelayedRequest(keys: Readonly<Record<string, string>>, req: IncomingMessage): boolean {
  const header = req.headers[RELAY_HEADER];
  if (typeof header !== 'string') return false;
  const [key, sig] = header.split(':', 2);
  const secret = key !== undefined ? keys[key] : undefined;
  if (!secret || !sig) return false;
  const want = Buffer.from(mac(secret, req.url ?? '', req.headers.authorization ?? ''));
  const got = Buffer.from(sig);
  return want.length === got.length && timingSafeEqual(want, got);
}

export interface RelayDeps {
  keys: Readonly<Record<string, string>>;
  logger: Logger;
  clock: Clock;
  metrics: ClusterMetrics;
  maxPayload: number;
}

export type RelayOutcome = 'relayed' | 'refused' | 'unreachable';

interface ActiveRelay {
  target: string;
  end(reason: 'host_lost' | 'drain'): void;
}

export interface RelayManager {
  /**
   * Opens the upstream socket to `target`; on success upgrades the client and pipes both ways
   * ('relayed'); an HTTP refusal from the host is answered to the client as is ('refused');
   * a host refusing TCP leaves the client socket untouched ('unreachable') so the caller can
   * place the room again.
   */
  relay(target: NodeInfo, req: IncomingMessage, socket: Duplex, head: Buffer, wss: WebSocketServer): Promise<RelayOutcome>;
  /** Ends the sessions relayed to `nodeId` with leave RECONNECT (the host died). */
  endTo(nodeId: string): void;
  /** Ends every relayed session with leave RECONNECT (this node drains). */
  endAll(): void;
  readonly size: number;
  close(): void;
}

function leaveFrame(json: boolean): string | Uint8Array {
  const msg = new SignalResponse({
    message: {
      case: 'leave',
      value: new LeaveRequest({ canReconnect: true, reason: DisconnectReason.MIGRATION, action: LeaveRequest_Action.RECONNECT }),
    },
  });
  return json ? msg.toJsonString() : msg.toBinary();
}

function writeHttp(socket: Duplex, status: number, statusText: string, body: Buffer): void {
  if (socket.destroyed) return;
  socket.end(
    `HTTP/1.1 ${status} ${statusText}\r\nContent-Type: text/plain; charset=utf-8\r\nAccess-Control-Allow-Origin: *\r\n` +
      `Content-Length: ${body.length}\r\nConnection: close\r\n\r\n${body.toString('utf8')}`,
  );
}

export function createRelayManager(deps: RelayDeps): RelayManager {
  const log = deps.logger.child({ component: 'relay' });
  const active = new Set<ActiveRelay>();
  const [keyName, secret] = Object.entries(deps.keys)[0] ?? ['', ''];

  function pipe(client: WebSocket, upstream: WebSocket, target: NodeInfo): void {
    let json = false;
    let done = false;
    let lastHeard = deps.clock.now();
    let pingTimer: TimerHandle | undefined;
    deps.metrics.relays(1);

    const finish = (reason: 'client' | 'host_closed' | 'host_lost' | 'drain') => {
      if (done) return;
      done = true;
      active.delete(entry);
      deps.clock.clearTimeout(pingTimer);
      deps.metrics.relays(-1);
      deps.metrics.relayEnded(reason);
      if (reason === 'host_lost' || reason === 'drain') {
        if (client.readyState === WebSocket.OPEN) client.send(leaveFrame(json));
        log.info({ host: target.id, reason }, 'relayed session ended: client asked to reconnect');
      }
      if (client.readyState === WebSocket.OPEN) client.close(1000);
      if (upstream.readyState === WebSocket.OPEN || upstream.readyState === WebSocket.CONNECTING) upstream.close(1000);
    };
    const entry: ActiveRelay = { target: target.id, end: finish };
    active.add(entry);

    upstream.on('message', (data: RawData, isBinary: boolean) => {
      if (done || client.readyState !== WebSocket.OPEN) return;
      if (client.bufferedAmount > MAX_BUFFERED_BYTES) {
        log.warn({ host: target.id }, 'relayed client reads nothing: closing it');
        client.terminate();
        return;
      }
      client.send(data as Buffer, { binary: isBinary });
    });
    client.on('message', (data: RawData, isBinary: boolean) => {
      lastHeard = deps.clock.now();
      if (!isBinary) json = true;
      if (!done && upstream.readyState === WebSocket.OPEN) upstream.send(data as Buffer, { binary: isBinary });
    });
    client.on('pong', () => {
      lastHeard = deps.clock.now();
    });
    // A host that closes normally has sent its own leave; anything else means it is gone.
    upstream.on('close', (code: number) => finish(code === 1000 ? 'host_closed' : 'host_lost'));
    upstream.on('error', (err) => log.debug({ err: err.message, host: target.id }, 'relay upstream error'));
    client.on('close', () => finish('client'));
    client.on('error', (err) => log.debug({ err: err.message }, 'relayed client socket error'));

    const ping = () => {
      if (done) return;
      if (deps.clock.now() - lastHeard > SILENCE_TIMEOUT_MS) {
        client.terminate();
        return;
      }
      client.ping();
      pingTimer = deps.clock.setTimeout(ping, PING_INTERVAL_MS);
    };
    pingTimer = deps.clock.setTimeout(ping, PING_INTERVAL_MS);
  }

  return {
    relay(target, req, socket, head, wss) {
      const path = req.url ?? '/rtc';
      const authorization = req.headers.authorization ?? '';
      const url = `${target.signalUrl.replace(/^http/, 'ws').replace(/\/+$/, '')}${path}`;
      const headers: Record<string, string> = {
        [RELAY_HEADER]: `${keyName}:${mac(secret, path, authorization)}`,
        [FORWARDED_HEADER]: req.socket.remoteAddress ?? '',
      };
      if (authorization) headers.authorization = authorization;
      const upstream = new WebSocket(url, {
        headers,
        maxPayload: deps.maxPayload,
        perMessageDeflate: false,
        handshakeTimeout: RELAY_CONNECT_TIMEOUT_MS,
      });
      return new Promise<RelayOutcome>((resolve) => {
        let settled = false;
        const settle = (o: RelayOutcome) => {
          if (settled) return false;
          settled = true;
          resolve(o);
          return true;
        };
        upstream.once('unexpected-response', (_r, res: IncomingMessage) => {
          const chunks: Buffer[] = [];
          let size = 0;
          res.on('data', (c: Buffer) => {
            size += c.length;
            if (size <= 4096) chunks.push(c);
          });
          res.on('end', () => {
            writeHttp(socket, res.statusCode ?? 502, res.statusMessage ?? 'Error', Buffer.concat(chunks));
            settle('refused');
          });
          res.on('error', () => {
            writeHttp(socket, 502, 'Bad Gateway', Buffer.from('the node hosting this room did not answer'));
            settle('refused');
          });
        });
        upstream.once('error', (err: NodeJS.ErrnoException) => {
          if (settled) return;
          upstream.terminate();
          if (err.code === 'ECONNREFUSED' || err.code === 'ECONNRESET' || err.code === 'EHOSTUNREACH') {
            settle('unreachable');
            return;
          }
          log.warn({ err: err.message, host: target.id }, 'relay to the hosting node failed');
          writeHttp(socket, 503, 'Service Unavailable', Buffer.from('the node hosting this room did not answer'));
          settle('refused');
        });
        upstream.once('open', () => {
          if (socket.destroyed) {
            upstream.close(1000);
            settle('refused');
            return;
          }
          wss.handleUpgrade(req, socket, head, (client) => {
            pipe(client, upstream, target);
            settle('relayed');
          });
        });
        socket.once('close', () => {
          if (!settled) upstream.terminate();
        });
      });
    },
    endTo(nodeId) {
      for (const r of Array.from(active)) if (r.target === nodeId) r.end('host_lost');
    },
    endAll() {
      for (const r of Array.from(active)) r.end('drain');
    },
    get size() {
      return active.size;
    },
    close() {
      for (const r of Array.from(active)) r.end('drain');
    },
  };
}
