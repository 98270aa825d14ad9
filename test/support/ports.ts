/**
 * Free loopback ports for servers that cannot bind port 0 themselves (redis-server, child
 * processes whose port must be known up front), and ports reserved for in-process servers that
 * bind them later (`reservePort`).
 */
import { createServer } from 'node:net';

export async function freePort(host = '127.0.0.1'): Promise<number> {
  return await new Promise((resolve, reject) => {
    const srv = createServer();
    srv.unref();
    srv.once('error', reject);
    srv.listen(0, host, () => {
      const addr = srv.address();
      const port = typeof addr === 'object' && addr ? addr.port : 0;
      srv.close(() => resolve(port));
    });
  });
}

/** A loopback port held by a placeholder listener until `release()`. */
export interface ReservedPort {
  port: number;
  /** Frees the port; bind it right after, in the same process. */
  release(): Promise<void>;
}

/**
 * A port that must be known long before its server binds it (a URL handed to other servers
 * first). `freePort` closes its probe at once, so while those servers start, any listen(0) or
 * outgoing connection on the machine may be given the same port (EADDRINUSE later); this keeps
 * it bound until the real server is about to listen.
 */
export async function reservePort(host = '127.0.0.1'): Promise<ReservedPort> {
  // Connections to the placeholder are reset at once, so a client trying the URL early fails
  // as it would on a closed port (and retries) instead of hanging on a silent listener.
  const srv = createServer((socket) => socket.destroy());
  srv.unref();
  await new Promise<void>((resolve, reject) => {
    srv.once('error', reject);
    srv.listen(0, host, () => resolve());
  });
  const addr = srv.address();
  const port = typeof addr === 'object' && addr ? addr.port : 0;
  let released: Promise<void> | undefined;
  return {
    port,
    release: () => (released ??= new Promise<void>((resolve) => srv.close(() => resolve()))),
  };
}
