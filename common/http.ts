/**
 * Small helpers for the HTTP listeners every process runs: start a server on a host/port and
 * learn the bound address, stop it (closing idle keep-alive sockets), and the `/healthz` answer
 * LiveKit and lk-jwt-service both give (GET/HEAD 200, anything else 405).
 */
import type { Server, IncomingMessage, ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';

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
