/**
 * Small helpers for the HTTP listeners every process runs: start a server on a host/port and
 * learn the bound address, stop it (closing idle keep-alive sockets), the `/healthz` answer
 * LiveKit and lk-jwt-service both give (GET/HEAD 200, anything else 405), and the two guards
 * every express app mounts: `guardUnreadBodies` first (a request answered before its body was
 * read keeps its connection only if the rest is small enough to drain, as Go's net/http does),
 * `requestErrorHandler` last (an exception in one request's code answers that request 500, is
 * logged once and counted; the process goes on).
 */
import type { Server, IncomingMessage, ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import type { ErrorRequestHandler, RequestHandler } from 'express';
import type { Registry } from 'prom-client';
import type { Logger } from './logger.ts';
import { faultCounter } from './metrics.ts';

export async function listen(server: Server, host: string, port: number): Promise<AddressInfo> {
  await new Promise<void>((resolve, reject) => {
    const onError = (err: Error) => reject(err);
    server.once('error', onError);
    server.listen(port, host, () => {
      server.off('error', onError);
      resolve();
    });
  });
  return server.address() as AddressInfo;
}

export async function closeServer(server: Server): Promise<void> {
  if (!server.listening) return;
  await new Promise<void>((resolve) => {
    server.close(() => resolve());
    server.closeAllConnections();
  });
}

/** URL form of a bound address, e.g. `http://127.0.0.1:7880`. */
export function urlOf(addr: AddressInfo, scheme = 'http'): string {
  const host =
    addr.address === '::' || addr.address === '0.0.0.0'
      ? '127.0.0.1'
      : addr.family === 'IPv6'
        ? `[${addr.address}]`
        : addr.address;
  return `${scheme}://${host}:${addr.port}`;
}

export function answerHealthz(req: IncomingMessage, res: ServerResponse): void {
  if (req.method === 'GET' || req.method === 'HEAD') {
    res.writeHead(200);
    res.end();
    return;
  }
  res.writeHead(405, { Allow: 'GET, HEAD' });
  res.end();
}

/** Unread request body a connection may still drain after its answer (Go's net/http: 256 KiB). */
export const MAX_DRAIN_BYTES = 256 * 1024;
/** How long that drain may take before the connection is dropped (real time: it bounds a socket). */
export const MAX_DRAIN_MS = 5_000;

/**
 * Mount first. When an answer starts while the request body is still unread (over a limit,
 * refused before reading, or a route that takes no body): if what is left, by Content-Length, is
 * at most `MAX_DRAIN_BYTES`, it is drained after the answer and the connection stays usable;
 * otherwise (larger, or chunked) the answer says `Connection: close` and Node closes the
 * connection once it is written. A drain that runs past its bound in bytes or time drops the
 * connection. Without this a partly read body stayed in the socket and the next request on
 * the same connection hung until it was reset.
 */
export function guardUnreadBodies(opts: { maxDrainBytes?: number; maxDrainMs?: number } = {}): RequestHandler {
  const maxDrainBytes = opts.maxDrainBytes ?? MAX_DRAIN_BYTES;
  const maxDrainMs = opts.maxDrainMs ?? MAX_DRAIN_MS;
  return (req, res, next) => {
    // HTTP/1.1: a request without Content-Length or Transfer-Encoding has no body.
    const chunked = req.headers['transfer-encoding'] !== undefined;
    const declared = Number(req.headers['content-length'] ?? 0);
    if (!chunked && declared === 0) return next();
    const writeHead = res.writeHead;
    res.writeHead = function (this: ServerResponse, ...args: unknown[]) {
      // What is left is at most what was declared; a chunked body has no bound.
      if (!req.complete && !res.headersSent && (chunked || !(declared <= maxDrainBytes))) {
        res.setHeader('Connection', 'close');
      }
      return (writeHead as (...a: unknown[]) => ServerResponse).apply(this, args);
    } as typeof res.writeHead;
    res.once('finish', () => {
      if (req.complete || req.destroyed || res.getHeader('Connection') === 'close') return;
      let drained = 0;
      const drop = () => req.socket.destroy();
      const timer = setTimeout(drop, maxDrainMs);
      timer.unref();
      req.on('data', (chunk: Buffer) => {
        drained += chunk.length;
        if (drained > maxDrainBytes) drop();
      });
      req.once('end', () => clearTimeout(timer));
      req.once('close', () => clearTimeout(timer));
      req.resume();
    });
    next();
  };
}

export interface RequestErrorHandlerDeps {
  logger: Logger;
  /** Registry of the listener's `/metrics`; the fault counter is made there on first use. */
  metrics: Registry;
  /** Writes the error body (default: plain text). */
  answer?: (res: ServerResponse, status: number, message: string) => void;
}

function plainAnswer(res: ServerResponse, status: number, message: string): void {
  res.writeHead(status, { 'Content-Type': 'text/plain; charset=utf-8', 'Content-Length': Buffer.byteLength(message) });
  res.end(message);
}

/**
 * Mount last. A client error an express layer raised (`status` 400-499: a body parser's 413,
 * bad JSON, a malformed URL) is answered with that status; anything else is a fault in our
 * code: answered 500, logged once at error level (method and path, never the query, which can
 * carry `access_token`) and counted as `matrixrtc_faults_total{kind="request"}`. Never a stack
 * trace on the wire. An answer already under way is cut off instead.
 */
export function requestErrorHandler(deps: RequestErrorHandlerDeps): ErrorRequestHandler {
  const faults = faultCounter(deps.metrics);
  const answer = deps.answer ?? plainAnswer;
  return (err: unknown, req, res, _next) => {
    const e = err as { status?: unknown; statusCode?: unknown; expose?: unknown; message?: unknown } | null;
    const status = typeof e?.status === 'number' ? e.status : typeof e?.statusCode === 'number' ? e.statusCode : 500;
    const clientError = status >= 400 && status < 500;
    if (!clientError) {
      faults.inc({ kind: 'request' });
      deps.logger.error({ err, method: req.method, path: req.path }, 'request failed with an unexpected exception; answered 500');
    }
    if (res.headersSent) {
      res.destroy();
      return;
    }
    if (clientError) answer(res, status, e?.expose === true && typeof e.message === 'string' ? e.message : 'Bad request');
    else answer(res, 500, 'Internal Server Error');
  };
}
