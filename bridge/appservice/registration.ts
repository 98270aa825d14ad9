/**
 * The appservice registration Synapse loads (`app_service_config_files`): a ready file with fresh
 * random tokens for one homeserver and bridge URL. Users namespace = every user of that server,
 * non-exclusive (the bridge only watches; users stay ordinary users), no rooms or aliases, not
 * rate limited. Pure: returns YAML text; the CLI in bridge/registration.ts writes it.
 */
import { randomBytes } from 'node:crypto';
import { stringify } from 'yaml';

export interface RegistrationInput {
  /** The homeserver's `server_name`, e.g. `example.org`. */
  serverName: string;
  /** Where Synapse reaches the bridge, e.g. `http://bridge:8080`. */
  bridgeUrl: string;
  id?: string;
  senderLocalpart?: string;
}

export interface Registration {
  id: string;
  url: string;
  as_token: string;
  hs_token: string;
  sender_localpart: string;
  rate_limited: boolean;
  namespaces: { users: { exclusive: boolean; regex: string }[]; aliases: never[]; rooms: never[] };
}

export class RegistrationInputError extends Error {
  override name = 'RegistrationInputError';
}

const escapeRegex = (s: string) => s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');

export function generateRegistration(input: RegistrationInput): Registration {
  if (!/^[A-Za-z0-9.\-:[\]]+$/.test(input.serverName)) {
    throw new RegistrationInputError(`server name "${input.serverName}" is not a valid Matrix server name (e.g. example.org or example.org:8448)`);
  }
  if (!/^https?:\/\/[^/\s]+/.test(input.bridgeUrl)) {
    throw new RegistrationInputError(`bridge URL "${input.bridgeUrl}" must start with http:// or https:// (where Synapse reaches the bridge)`);
  }
  const token = () => randomBytes(32).toString('base64url');
  return {
    id: input.id ?? 'matrix-rtc-bridge',
    url: input.bridgeUrl.replace(/\/+$/, ''),
    as_token: token(),
    hs_token: token(),
    sender_localpart: input.senderLocalpart ?? 'rtcbridge',
    rate_limited: false,
    namespaces: { users: [{ exclusive: false, regex: `@.*:${escapeRegex(input.serverName)}` }], aliases: [], rooms: [] },
  };
}

export function registrationYaml(reg: Registration): string {
  return `# Appservice registration for the MatrixRTC bridge. Give this file to Synapse
# (app_service_config_files) and to the bridge (LIVEKIT_AS_REGISTRATION_FILE). Keep it secret.
${stringify(reg)}`;
}
