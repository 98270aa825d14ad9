/**
 * Entry point of the SFU process: `npm run sfu -- --config FILE [--validate]`. Reads the config
 * (file, or LIVEKIT_CONFIG / LIVEKIT_KEYS from the environment as livekit-server does), starts
 * the server and stops it on SIGINT/SIGTERM. The only SFU file that reads env or exits.
 */
import { parseMainArgs } from '../common/cli.ts';
import { runMain, untilShutdownSignal, type ProcessContext } from '../common/process.ts';
import { createLogger } from '../common/logger.ts';
import { systemClock } from '../common/clock.ts';
import { resolveSfuConfig, type SfuConfig } from './config.ts';
import { createSfuServer } from './server.ts';
import { useSmallBufferPool } from './buffer-pool.ts';

const USAGE = `usage: npm run sfu -- --config FILE [--workers N|auto] [--validate]
  The config uses LiveKit server's YAML keys (see config/sfu.yaml).
  LIVEKIT_CONFIG (YAML text) replaces the file; LIVEKIT_KEYS ("key: secret") replaces keys.
  --workers replaces the config's \`workers\` (media threads; auto = one per core).`;

async function main(proc: ProcessContext): Promise<number> {
  const args = parseMainArgs(process.argv.slice(2), USAGE, { workers: { type: 'string' } });
  if (typeof args === 'number') return args;
  const config: SfuConfig = resolveSfuConfig({
    configFile: args.config,
    configBody: process.env.LIVEKIT_CONFIG,
    keysEnv: process.env.LIVEKIT_KEYS,
    ...(typeof args.rest.workers === 'string' ? { workers: args.rest.workers } : {}),
  });
  if (args.validate) {
    console.log('sfu: configuration is valid');
    return 0;
  }
  useSmallBufferPool();
  const logger = createLogger({ name: 'sfu', level: config.logging.level });
  const sfu = createSfuServer({ config, logger, clock: systemClock, metrics: proc.metrics });
  await sfu.start();
  const signal = await untilShutdownSignal();
  logger.info({ signal }, 'shutting down');
  // SIGTERM (a rolling restart, `docker stop`, Kubernetes) drains a clustered node first: its
  // participants reconnect through the other nodes before it goes. SIGINT stops at once.
  if (signal === 'SIGTERM') await sfu.drain();
  await sfu.stop();
  return 0;
}

runMain('sfu', main);
