/**
 * A process entry point for test/integration/processes.test.ts: the real `runMain` of
 * common/process.ts around a tiny HTTP listener serving the process registry's `/metrics`, which
 * throws on demand outside any request: `GET /throw` (an uncaught exception from a timer
 * callback) and `GET /reject` (a rejected promise nobody handles). Prints `ready <port>`.
 * Its errors carry `access_token: <argv[2]>`, which the redacting logger must hide.
 */
import { createServer } from 'node:http';
import { listen } from '../../common/http.ts';
import { serveMetrics } from '../../common/metrics.ts';
import { runMain, untilShutdownSignal } from '../../common/process.ts';

/** A secret carried by the thrown errors (argv[2]); it must never reach the output. */
const secret = process.argv[2] ?? 'no-secret';

runMain('faulty', async (proc) => {
  const server = createServer((req, res) => {
    if (req.url === '/metrics') return void serveMetrics([proc.metrics], req, res);
    const err = Object.assign(new Error(`${req.url} on demand`), { access_token: secret });
    if (req.url === '/throw') {
      setTimeout(() => {
        throw err;
      }, 0);
    } else if (req.url === '/reject') {
      void Promise.reject(err);
    }
    res.end('ok');
  });
  const { port } = await listen(server, '127.0.0.1', 0);
  console.log(`ready ${port}`);
  await untilShutdownSignal();
  server.close();
  return 0;
});
