/**
 * A loopback HTTP proxy for crash tests: forwards every request to a target (our SFU's Twirp
 * API) unchanged, except those a test chose to hold. A held request stays unanswered until the
 * test drops it (its socket is destroyed, so it never reaches the target) — the way to make a
 * process under test "slow to answer" at an exact point without test hooks in its code.
 * Lifecycle: `startHoldingProxy(target)` → `hold(match)` / `passThrough()` / `dropHeld()` →
 * `stop()`.
 */
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import { closeServer, listen, urlOf } from '../../common/http.ts';

export interface HoldingProxy {
  /** http://127.0.0.1:port */
  url: string;
  /** Paths of the requests being held now. */
  held(): string[];
  /** Every path seen, in order. */
  readonly seen: string[];
  /** Holds requests whose path matches from now on. */
  hold(match: RegExp): void;
  passThrough(): void;
  /** Destroys the held requests' sockets without forwarding them. */
  dropHeld(): void;
  stop(): Promise<void>;
}

export async function startHoldingProxy(target: string): Promise<HoldingProxy> {
  let match: RegExp | undefined;
  const held: { path: string; req: IncomingMessage; res: ServerResponse }[] = [];
  const seen: string[] = [];

  async function forward(req: IncomingMessage, res: ServerResponse, body: Buffer): Promise<void> {
    try {
      const headers: Record<string, string> = {};
      for (const [k, v] of Object.entries(req.headers)) if (typeof v === 'string' && !['host', 'connection', 'content-length'].includes(k)) headers[k] = v;
      const answer = await fetch(`${target}${req.url ?? '/'}`, { method: req.method, headers, body: body.length ? new Uint8Array(body) : undefined });
      res.writeHead(answer.status, { 'Content-Type': answer.headers.get('content-type') ?? 'application/json' });
      res.end(Buffer.from(await answer.arrayBuffer()));
    } catch {
      res.destroy();
    }
  }

  const server = createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      const path = req.url ?? '/';
      seen.push(path);
      if (match?.test(path)) held.push({ path, req, res });
      else void forward(req, res, Buffer.concat(chunks));
    });
  });
  const address = await listen(server, '127.0.0.1', 0);
  const dropHeld = () => {
    for (const h of held.splice(0)) h.res.destroy();
  };
  return {
    url: urlOf(address),
    held: () => held.map((h) => h.path),
    seen,
    hold(m) {
      match = m;
    },
    passThrough() {
      match = undefined;
    },
    dropHeld,
    async stop() {
      dropHeld();
      server.closeAllConnections();
      await closeServer(server);
    },
  };
}
