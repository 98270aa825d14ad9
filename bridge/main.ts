/**
 * Entry point of the bridge process (appservice + token service):
 * `npm run bridge -- [--config FILE] [--validate]`. Reads lk-jwt-service's LIVEKIT_* variables
 * and the optional bridge YAML, starts the server and stops it on SIGINT/SIGTERM. The only
 * bridge file that reads env or exits.
 */
import { parseMainArgs } from '../common/cli.ts';
import { runMain, untilShutdownSignal, type ProcessContext } from '../common/process.ts';
import { createLogger } from '../common/logger.ts';
import { systemClock } from '../common/clock.ts';
import { resolveBridgeConfig, type BridgeConfig } from './config.ts';
import { createBridge } from './bridge.ts';

const USAGE = `usage: npm run bridge -- [--config FILE] [--validate]
  Token-service settings come from lk-jwt-service's variables (LIVEKIT_URL, LIVEKIT_KEY,
  LIVEKIT_SECRET, LIVEKIT_FULL_ACCESS_HOMESERVERS, LIVEKIT_JWT_BIND, ...); bridge settings from
  the YAML file (see config/bridge.yaml) or BRIDGE_<KEY> variables.`;

async function main(proc: ProcessContext): Promise<number> {
  const args = parseMainArgs(process.argv.slice(2), USAGE);
  if (typeof args === 'number') return args;
  const config: BridgeConfig = resolveBridgeConfig(process.env, args.config);
  if (args.validate) {
    console.log('bridge: configuration is valid');
    return 0;
  }
  const logger = createLogger({ name: 'bridge', level: config.logLevel });
  const bridge = createBridge({ config, logger, clock: systemClock, metrics: proc.metrics });
  await bridge.start();
  logger.info({ signal: await untilShutdownSignal() }, 'shutting down');
  await bridge.stop();
  return 0;
}

runMain('bridge', main);
