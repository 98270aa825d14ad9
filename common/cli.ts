/**
 * Argument parsing shared by the process entry points (`--config FILE`, `--validate`). Only
 * `main.ts` files call it; it returns values and never exits.
 */
import { parseArgs } from 'node:util';

export interface CommonArgs {
  config?: string;
  validate: boolean;
  help: boolean;
  rest: Record<string, string | boolean | undefined>;
}

export function parseCommonArgs(
  argv: string[],
  extra: Record<string, { type: 'string' | 'boolean' }> = {},
): CommonArgs {
  const { values } = parseArgs({
    args: argv,
    options: {
      config: { type: 'string', short: 'c' },
      validate: { type: 'boolean', default: false },
      help: { type: 'boolean', short: 'h', default: false },
      ...extra,
    },
    strict: true,
    allowPositionals: false,
  });
  const { config, validate, help, ...rest } = values as Record<string, string | boolean | undefined>;
  return {
    config: typeof config === 'string' ? config : undefined,
    validate: validate === true,
    help: help === true,
    rest,
  };
}
