/**
 * The Twirp endpoint: `POST /twirp/livekit.RoomService/<Method>` and, when an agent dispatcher
 * is given, `POST /twirp/livekit.AgentDispatchService/<Method>`, in both encodings.
 * `createRoomServiceHandler(deps)` returns a plain node request handler; mount it with
 * `app.use('/twirp', handler)` on the SFU's express app (it also accepts the unstripped
 * `/twirp/...` path when used on a bare http server). Order of checks, as LiveKit's middleware
 * and Twirp server do them: token (plain-text 401), HTTP method, route, Content-Type, body,
 * grant (Twirp `unauthenticated`), arguments, backend. No failure escapes as an exception.
 */
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { Logger } from '../../common/logger.ts';
import type { Clock } from '../../common/clock.ts';
import type { TwirpMetrics } from '../metrics.ts';
import { RoomServiceError, type RoomServiceBackend } from '../room-service-api.ts';
import { AuthRejection, createTokenVerifier } from './auth.ts';
import { decodeRequest, encodeResponse, encodingOf } from './codec.ts';
import { TwirpError, writeTwirpError } from './errors.ts';
import { ROOM_SERVICE_METHODS, type MethodSpec } from './room-service.ts';
import { AGENT_DISPATCH_METHODS } from './agent-dispatch-service.ts';
import type { AgentDispatchBackend } from '../agent/dispatcher.ts';

export interface RoomServiceHandlerDeps {
  backend: RoomServiceBackend;
  /** Serves AgentDispatchService too when present. */
  agentDispatch?: AgentDispatchBackend;
  /** API key -> secret (the SFU config's `keys`). */
  keys: Record<string, string>;
  clock: Clock;
  logger: Logger;
  metrics?: TwirpMetrics;
  /** Largest request body accepted; default 1 MiB (SendData payloads stay far below). */
  maxBodyBytes?: number;
}

export type NodeHandler = (req: IncomingMessage, res: ServerResponse) => void;

/** A method bound to its service's backend. */
type BoundMethod = { spec: MethodSpec<unknown>; backend: () => unknown };
const PATH = /^(?:\/twirp)?\/([A-Za-z0-9_.]+)\/([A-Za-z0-9_]+)$/;

class BodyTooLarge extends Error {}

async function readBody(req: IncomingMessage, limit: number): Promise<Buffer> {
  // A declared length over the limit is refused before reading: waiting for a body that will be
  // refused anyway let a client hold the connection by sending part of it and stopping.
  const declared = Number(req.headers['content-length'] ?? 0);
  if (declared > limit) throw new BodyTooLarge(`the request body is larger than ${limit} bytes`);
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of req) {
    const buf = chunk as Buffer;
    size += buf.length;
    if (size > limit) throw new BodyTooLarge(`the request body is larger than ${limit} bytes`);
    chunks.push(buf);
  }
  return Buffer.concat(chunks);
}

function writePlain(res: ServerResponse, status: number, text: string): void {
  res.writeHead(status, { 'Content-Type': 'text/plain; charset=utf-8', 'Content-Length': Buffer.byteLength(text) });
  res.end(text);
}

export function createRoomServiceHandler(deps: RoomServiceHandlerDeps): NodeHandler {
  const services: Record<string, Readonly<Record<string, MethodSpec<never>>>> = { 'livekit.RoomService': ROOM_SERVICE_METHODS };
  // Read at call time: a caller may swap its backend behind a getter.
  const backends: Record<string, () => unknown> = { 'livekit.RoomService': () => deps.backend };
  if (deps.agentDispatch) {
    services['livekit.AgentDispatchService'] = AGENT_DISPATCH_METHODS;
    backends['livekit.AgentDispatchService'] = () => deps.agentDispatch;
  }
  /** The method a path names (label = method name, as before), or undefined. */
  function methodOf(pathname: string): (BoundMethod & { name: string }) | undefined {
    const m = PATH.exec(pathname);
    const methods = m && Object.hasOwn(services, m[1]!) ? services[m[1]!] : undefined;
    if (!m || !methods || !Object.hasOwn(methods, m[2]!)) return undefined;
    return { name: m[2]!, spec: methods[m[2]!] as MethodSpec<unknown>, backend: backends[m[1]!]! };
  }

  const verifier = createTokenVerifier({ keys: deps.keys, clock: deps.clock });
  const maxBody = deps.maxBodyBytes ?? 1 << 20;
  const log = deps.logger.child({ component: 'twirp' });

  async function serve(req: IncomingMessage, res: ServerResponse): Promise<string> {
    const url = new URL(req.url ?? '/', 'http://localhost');
    let grants;
    try {
      grants = await verifier.verify(req.headers.authorization, url.searchParams.get('access_token'));
    } catch (err) {
      if (err instanceof AuthRejection) {
        writePlain(res, 401, err.message);
        return 'unauthorized';
      }
      throw err;
    }
    if (req.method !== 'POST') {
      throw new TwirpError('bad_route', `unsupported method ${req.method} (only POST is allowed)`, {
        twirp_invalid_route: `${req.method} ${url.pathname}`,
      });
    }
    const method = methodOf(url.pathname);
    if (!method) {
      throw new TwirpError('bad_route', `no handler for path "${url.pathname}"`, {
        twirp_invalid_route: `POST ${url.pathname}`,
      });
    }
    const encoding = encodingOf(req.headers['content-type']);
    if (!encoding) {
      throw new TwirpError('bad_route', `unexpected Content-Type: "${req.headers['content-type'] ?? ''}"`, {
        twirp_invalid_route: `POST ${url.pathname}`,
      });
    }
    let body: Buffer;
    try {
      body = await readBody(req, maxBody);
    } catch (err) {
      if (err instanceof BodyTooLarge) throw new TwirpError('malformed', err.message);
      throw new TwirpError('malformed', `failed to read request body: ${(err as Error).message}`);
    }
    const decoded = decodeRequest(method.spec.request, encoding, body);
    method.spec.authorize(grants, decoded.message);
    const answer = await method.spec.handle(method.backend(), decoded);
    const out = encodeResponse(answer, encoding);
    res.writeHead(200, { 'Content-Type': out.contentType, 'Content-Length': out.body.length });
    res.end(out.body);
    return method.name;
  }

  return (req, res) => {
    const label = methodOf(new URL(req.url ?? '/', 'http://localhost').pathname)?.name ?? 'unknown';
    serve(req, res).then(
      (outcome) => deps.metrics?.request(label, outcome === 'unauthorized' ? 'unauthorized' : 'ok'),
      (err: unknown) => {
        let twirp: TwirpError;
        if (err instanceof TwirpError) twirp = err;
        else if (err instanceof RoomServiceError) twirp = new TwirpError(err.code, err.message);
        else {
          log.error({ err, method: label }, 'RoomService request failed');
          twirp = new TwirpError('internal', 'internal error');
        }
        if (twirp.code !== 'internal') log.debug({ method: label, code: twirp.code, msg: twirp.message }, 'twirp error');
        deps.metrics?.request(label, twirp.code);
        if (res.headersSent) {
          res.destroy();
          return;
        }
        // Drain what is left of the body so the connection stays usable.
        req.resume();
        writeTwirpError(res, twirp);
      },
    );
  };
}
