/**
 * A TCP load balancer on loopback for cluster tests, standing in for what operators put in
 * front of several SFU nodes: each new connection goes to the next backend in turn, and a
 * backend that refuses the connection is skipped for the next one (as a health-checked
 * balancer would). `stop()` closes the listener and every piped connection.
 */
import { createServer, Socket, type Server } from 'node:net';

export interface TcpBalancer {
  readonly port: number;
  readonly wsUrl: string;
  /** Backends as `port`s on 127.0.0.1; replaceable while running. */
  setBackends(ports: number[]): void;
  stop(): Promise<void>;
}

export async function startTcpBalancer(backends: number[]): Promise<TcpBalancer> {
  let ports = [...backends];
  let next = 0;
  const open = new Set<Socket>();
  const connect = (client: Socket, tried: number) => {
    if (tried >= ports.length) {
      client.destroy();
      return;
    }
    const port = ports[next++ % ports.length]!;
    const upstream = new Socket();
    let connected = false;
    upstream.once('error', () => {
      if (!connected) connect(client, tried + 1);
      else client.destroy();
    });
    upstream.connect(port, '127.0.0.1', () => {
      connected = true;
      open.add(upstream);
      upstream.once('close', () => {
        open.delete(upstream);
        client.destroy();
      });
      client.once('close', () => upstream.destroy());
      client.pipe(upstream);
      upstream.pipe(client);
      client.resume();
    });
  };
  const server: Server = createServer({ pauseOnConnect: true }, (client) => {
    open.add(client);
    client.once('close', () => open.delete(client));
    client.on('error', () => client.destroy());
    connect(client, 0);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', () => resolve()));
  const addr = server.address();
  const port = typeof addr === 'object' && addr ? addr.port : 0;
  return {
    port,
    wsUrl: `ws://127.0.0.1:${port}`,
    setBackends(p) {
      ports = [...p];
    },
    async stop() {
      for (const s of open) s.destroy();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}
