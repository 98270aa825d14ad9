/**
 * Command that writes a ready appservice registration with fresh tokens:
 * `npm run bridge:registration -- --server-name example.org --url http://bridge:8080 [--out FILE]`
 * (without --out it prints to stdout). An entry point: it reads argv and sets the exit code.
 */
import { writeFileSync } from 'node:fs';
import { parseArgs } from 'node:util';
import { generateRegistration, registrationYaml, RegistrationInputError } from './appservice/registration.ts';

const USAGE = 'usage: npm run bridge:registration -- --server-name <homeserver name> --url <bridge URL as Synapse reaches it> [--out <file>] [--id <id>] [--sender-localpart <localpart>]';

function main(argv: string[]): number {
  let values: Record<string, string | boolean | undefined>;
  try {
    ({ values } = parseArgs({
      args: argv,
      options: {
        'server-name': { type: 'string' },
        url: { type: 'string' },
        out: { type: 'string' },
        id: { type: 'string' },
        'sender-localpart': { type: 'string' },
        help: { type: 'boolean', short: 'h' },
      },
      strict: true,
    }));
  } catch (err) {
    process.stderr.write(`${(err as Error).message}\n${USAGE}\n`);
    return 2;
  }
  if (values.help) {
    process.stdout.write(`${USAGE}\n`);
    return 0;
  }
  const serverName = values['server-name'];
  const url = values.url;
  if (typeof serverName !== 'string' || typeof url !== 'string') {
    process.stderr.write(`--server-name and --url are required\n${USAGE}\n`);
    return 2;
  }
  try {
    const text = registrationYaml(
      generateRegistration({
        serverName,
        bridgeUrl: url,
        id: typeof values.id === 'string' ? values.id : undefined,
        senderLocalpart: typeof values['sender-localpart'] === 'string' ? values['sender-localpart'] : undefined,
      }),
    );
    if (typeof values.out === 'string') {
      writeFileSync(values.out, text, { mode: 0o600, flag: 'wx' });
      process.stderr.write(`wrote ${values.out}\n`);
    } else process.stdout.write(text);
    return 0;
  } catch (err) {
    if (err instanceof RegistrationInputError) {
      process.stderr.write(`${err.message}\n`);
      return 2;
    }
    process.stderr.write(`cannot write the registration: ${(err as Error).message}\n`);
    return 1;
  }
}

process.exitCode = main(process.argv.slice(2));
