/**
 * `npm start`: the embedded default (SFU + bridge in one process, in-memory, loopback only).
 * Passes `BRIDGE_*` and lk-jwt-service's appservice variables to the bridge (embedded.ts
 * `embeddedBridgeEnv`), says which other LIVEKIT_* it does not take, prints the URLs, whether
 * the appservice (membership check) is on, and the next steps, and stops cleanly on
 * SIGINT/SIGTERM.
 */
import { resolve } from 'node:path';
import { parseMainArgs } from '../common/cli.ts';
import { ConfigError } from '../common/config.ts';
import { runMain, untilShutdownSignal, type ProcessContext } from '../common/process.ts';
import { createLogger } from '../common/logger.ts';
import { systemClock } from '../common/clock.ts';
import { createEmbedded, EMBEDDED_LIVEKIT_VARIABLES, embeddedBridgeEnv, type EmbeddedUrls } from './embedded.ts';
import { useSmallBufferPool } from '../sfu/buffer-pool.ts';

const USAGE = `usage: npm start [-- --data-dir DIR --sfu-port 7880 --bridge-port 8080 --host 127.0.0.1]`;

function portArg(v: string | boolean | undefined, fallback: number, name: string): number {
  if (v === undefined) return fallback;
  const n = Number(v);
  if (!Number.isInteger(n) || n < 0 || n > 65535) throw new ConfigError([`--${name}: "${String(v)}" is not a port`]);
  return n;
}

/** The summary's appservice line: only printed when a registration is given. */
function appserviceLine(as: EmbeddedUrls['appservice']): string {
  if (!as) return '';
  const where = as.homeserverUrl
    ? `${as.homeserverUrl} (from ${as.homeserverUrlFrom})`
    : `from https://${as.serverName}/.well-known/matrix/client (see the log)`;
  const registration = as.registrationFile ?? 'LIVEKIT_AS_TOKEN / LIVEKIT_HS_TOKEN';
  return `  Appservice               on: membership check, registration ${registration}
                           homeserver ${as.serverName}, client-server API ${where}
`;
}

async function main(proc: ProcessContext): Promise<number> {
  const args = parseMainArgs(process.argv.slice(2), USAGE, {
    'data-dir': { type: 'string' },
    'sfu-port': { type: 'string' },
    'bridge-port': { type: 'string' },
    host: { type: 'string' },
  });
  if (typeof args === 'number') return args;
  useSmallBufferPool();
  const logger = createLogger({ name: 'embedded', level: (process.env.LIVEKIT_LOG_LEVEL as 'info') || 'info' });
  const bridgeEnv = embeddedBridgeEnv(process.env);
  if (bridgeEnv.ignored.length) {
    logger.warn(
      { ignored: bridgeEnv.ignored, taken: EMBEDDED_LIVEKIT_VARIABLES },
      'npm start sets the SFU URL, key pair, bind address and full access itself and keeps state in memory: ' +
        'these variables are not used (run the SFU and `npm run bridge` for them)',
    );
  }
  const embedded = createEmbedded({
      dataDir: resolve(typeof args.rest['data-dir'] === 'string' ? args.rest['data-dir'] : '.data'),
      sfuPort: portArg(args.rest['sfu-port'], 7880, 'sfu-port'),
      bridgePort: portArg(args.rest['bridge-port'], 8080, 'bridge-port'),
      host: typeof args.rest.host === 'string' ? args.rest.host : '127.0.0.1',
      logger,
      clock: systemClock,
      metrics: proc.metrics,
      env: bridgeEnv.env,
    });
  if (args.validate) {
    console.log('embedded: configuration is valid');
    return 0;
  }
  const urls = await embedded.start();
  console.log(`
MatrixRTC backend (embedded: SFU + bridge in one process, in-memory state, loopback only)

  SFU (LiveKit protocol)   ${urls.livekitUrl}      health ${urls.sfuUrl}/healthz
  Token service + bridge   ${urls.bridgeUrl}       health ${urls.bridgeUrl}/healthz
  SFU webhooks to          ${urls.webhookUrls.join(', ') || '(none with --bridge-port 0: the bridge polls the SFU instead)'}
  Metrics                  ${urls.bridgeUrl}/metrics
  Connectivity test page   ${urls.sfuUrl}/test/   (see and hear yourself through the SFU)
  Dev API key              ${urls.apiKey}  (secret in ${urls.keysFile}${urls.keysCreated ? ', just created' : ''})
${appserviceLine(urls.appservice)}
Next: point Element Call's livekit_service_url at ${urls.bridgeUrl}, or mint a token with
livekit-server-sdk using the dev key and join ${urls.livekitUrl}. README.md explains how to
register the appservice with Synapse. Ctrl-C stops.
`);
  await untilShutdownSignal();
  await embedded.stop();
  return 0;
}

runMain('embedded', main);
