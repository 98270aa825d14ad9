/**
 * Synapse's wire JSON for appservice pushes: compact (no spaces) with object keys sorted at
 * every level, as recorded in ../shared/fixtures/synapse-1.132/transactions (README rule 2).
 */
export function sortKeysDeep(value: unknown): unknown {
  if (Array.isArray(value)) return value.map(sortKeysDeep);
  if (value && typeof value === 'object') {
    const out: Record<string, unknown> = {};
    for (const k of Object.keys(value).toSorted()) out[k] = sortKeysDeep((value as Record<string, unknown>)[k]);
    return out;
  }
  return value;
}

export function compactSortedJson(value: unknown): string {
  return JSON.stringify(sortKeysDeep(value));
}
