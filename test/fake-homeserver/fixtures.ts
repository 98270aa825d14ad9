/**
 * Loads the recorded Synapse 1.132 traffic (../shared/fixtures/synapse-1.132) for tests that
 * compare the fake homeserver and the bridge against it.
 */
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';

export const FIXTURES_DIR = fileURLToPath(new URL('../../../shared/fixtures/synapse-1.132/', import.meta.url));

export interface RecordedPush {
  method: string;
  path: string;
  headers: Record<string, string>;
  body: { events: Record<string, unknown>[] } & Record<string, unknown>;
  _meta: { raw_body: string; response_status: number; received_at: number };
}

export interface RecordedCsCall {
  request: { method: string; path: string; headers: Record<string, string>; body?: unknown };
  status: number;
  headers: Record<string, string>;
  body: unknown;
}

export function loadTransactions(flow: string): RecordedPush[] {
  return JSON.parse(readFileSync(`${FIXTURES_DIR}transactions/${flow}.json`, 'utf8')) as RecordedPush[];
}

export function loadCsApi(name: string): RecordedCsCall {
  return JSON.parse(readFileSync(`${FIXTURES_DIR}cs-api/${name}.json`, 'utf8')) as RecordedCsCall;
}

export function loadClient(flow: string): { request: { method: string; path: string; as: string; body?: unknown }; status: number; body: unknown }[] {
  return JSON.parse(readFileSync(`${FIXTURES_DIR}client/${flow}.json`, 'utf8')) as never;
}
