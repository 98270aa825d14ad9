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

/**
 * `parseCommonArgs` for a main: a bad flag prints the message and the usage (exit code 2),
 * `--help` prints the usage (exit code 0); either way the caller returns the number.
 */
export function parseMainArgs(
  argv: string[],
  usage: string,
  extra: Record<string, { type: 'string' | 'boolean' }> = {},
): CommonArgs | number {
  let args: CommonArgs;
  try {
    args = parseCommonArgs(argv, extra);
  } catch (err) {
    console.error(`${(err as Error).message}\n${usage}`);
    return 2;
  }
  if (args.help) {
    console.log(usage);
    return 0;
  }
  return args;
}
