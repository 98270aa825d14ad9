/**
 * Config plumbing shared by both processes: read YAML, validate it against a zod schema with
 * defaults, and turn every problem into a `ConfigError` that names the key's path and says what
 * to do. Nothing here touches `process.env` or exits; `main.ts` of each process does that.
 */
import { readFileSync } from 'node:fs';
import { parse as parseYaml, stringify as stringifyYaml } from 'yaml';
import type { z } from 'zod';

/** One or more problems with a config, each naming the key. */
export class ConfigError extends Error {
  readonly problems: readonly string[];
  constructor(problems: readonly string[], source?: string) {
    const where = source ? ` (${source})` : '';
    super(`invalid configuration${where}:\n  - ${problems.join('\n  - ')}`);
    this.name = 'ConfigError';
    this.problems = problems;
  }
}

/** Parses YAML text; a syntax error becomes a ConfigError with the line number. */
export function parseYamlText(text: string, source: string): unknown {
  try {
    const value: unknown = parseYaml(text);
    return value ?? {};
  } catch (err) {
    throw new ConfigError([`not valid YAML: ${(err as Error).message}`], source);
  }
}

export function readYamlFile(path: string): unknown {
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (err) {
    throw new ConfigError([`cannot read config file: ${(err as Error).message}`], path);
  }
  return parseYamlText(text, path);
}

function pathOf(path: readonly PropertyKey[]): string {
  return path.map(String).join('.') || '(top level)';
}

/** Validates `raw` with `schema`; unknown keys and bad values are reported by path. */
export function parseWithSchema<S extends z.ZodType>(
  schema: S,
  raw: unknown,
  source: string,
  describeUnknown: (path: string) => string = (p) =>
    `${p}: unknown key (check the spelling against the sample config)`,
): z.output<S> {
  const result = schema.safeParse(raw);
  if (result.success) return result.data;
  const problems: string[] = [];
  for (const issue of result.error.issues) {
    if (issue.code === 'unrecognized_keys') {
      for (const key of issue.keys) {
        problems.push(describeUnknown(pathOf([...issue.path, key])));
      }
    } else {
      problems.push(`${pathOf(issue.path)}: ${issue.message}`);
    }
  }
  throw new ConfigError(problems, source);
}

/** YAML text of a config object, with a comment header, for the generated sample configs. */
export function toSampleYaml(header: string, value: unknown): string {
  const comment = header
    .trim()
    .split('\n')
    .map((l) => `# ${l}`.trimEnd())
    .join('\n');
  return `${comment}\n${stringifyYaml(value, { lineWidth: 100 })}`;
}

/** `":8080"`, `"127.0.0.1:8080"`, `"[::1]:8080"` or `"8080"` to host and port. */
export function parseBindAddress(bind: string, what: string): { host: string; port: number } {
  const m = /^(?:\[([^\]]+)\]|([^:[\]]*))?:?(\d+)$/.exec(bind.trim());
  const port = m ? Number(m[3]) : NaN;
  if (!m || !Number.isInteger(port) || port < 0 || port > 65535) {
    throw new ConfigError([`${what}: "${bind}" is not host:port (e.g. ":8080" or "127.0.0.1:8080")`]);
  }
  const host = m[1] ?? m[2] ?? '';
  return { host: host === '' ? '::' : host, port };
}
