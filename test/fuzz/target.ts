/**
 * What a fuzz target is, and the mutators every target shares. A target drives one parser or
 * entry point of ours with inputs from a fast-check arbitrary (generated structure, plus
 * recorded real inputs mutated byte by byte). A case passes when our code returns or throws one
 * of the errors it documents for bad input (`expected`); any other exception is a crash.
 * Targets are built by `setup()` in the process that runs them (test/fuzz/child.ts) and torn
 * down by `teardown()`, after which the runner compares heap use with where it started.
 */
import fc from 'fast-check';

export interface FuzzCase<I> {
  /** Replaces the target's arbitrary when inputs depend on what setup made. */
  arbitrary?: fc.Arbitrary<I>;
  /** Runs one case; resolves or throws. */
  one(input: I): void | Promise<void>;
  /** Errors that mean "bad input answered correctly", not a crash. */
  expected(err: unknown): boolean;
  /** Frees everything setup made (rooms, sockets, servers). */
  teardown(): Promise<void>;
  /** Extra figures for the report (e.g. how many cases reached the deep path). */
  stats?(): Record<string, number>;
}

export interface FuzzTarget<I = unknown> {
  name: string;
  description: string;
  /** Whether a case is async (network targets). */
  async: boolean;
  arbitrary(): fc.Arbitrary<I>;
  setup(): Promise<FuzzCase<I>>;
}

/** A recorded input, mutated: bit flips, byte overwrites, truncation, insertion, splice. */
export function mutatedBytes(corpus: readonly Uint8Array[]): fc.Arbitrary<Uint8Array> {
  if (corpus.length === 0) throw new Error('mutatedBytes needs a corpus');
  const edit = fc.oneof(
    fc.record({ kind: fc.constant('flip' as const), at: fc.nat(), bit: fc.integer({ min: 0, max: 7 }) }),
    fc.record({ kind: fc.constant('set' as const), at: fc.nat(), value: fc.integer({ min: 0, max: 255 }) }),
    fc.record({ kind: fc.constant('cut' as const), at: fc.nat() }),
    fc.record({ kind: fc.constant('insert' as const), at: fc.nat(), bytes: fc.uint8Array({ maxLength: 16 }) }),
    fc.record({ kind: fc.constant('dup' as const), at: fc.nat(), len: fc.integer({ min: 1, max: 64 }) }),
  );
  return fc
    .tuple(fc.integer({ min: 0, max: corpus.length - 1 }), fc.array(edit, { minLength: 1, maxLength: 6 }))
    .map(([i, edits]) => {
      let b = Uint8Array.from(corpus[i]!);
      for (const e of edits) {
        const at = b.length === 0 ? 0 : e.at % b.length;
        switch (e.kind) {
          case 'flip':
            if (b.length) b[at] = b[at]! ^ (1 << e.bit);
            break;
          case 'set':
            if (b.length) b[at] = e.value;
            break;
          case 'cut':
            b = b.slice(0, at);
            break;
          case 'insert':
            b = Uint8Array.from([...b.slice(0, at), ...e.bytes, ...b.slice(at)]);
            break;
          case 'dup':
            b = Uint8Array.from([...b.slice(0, at + e.len), ...b.slice(at, at + e.len), ...b.slice(at + e.len)]);
            break;
        }
      }
      return b;
    });
}

/** Text mutated as bytes (UTF-8 in and out, invalid sequences kept as replacement chars). */
export function mutatedText(corpus: readonly string[]): fc.Arbitrary<string> {
  return mutatedBytes(corpus.map((s) => Buffer.from(s))).map((b) => Buffer.from(b).toString('utf8'));
}

/** JSON values where a field of a recorded object may be replaced by anything JSON can hold. */
export function jsonWithReplacedFields(corpus: readonly Record<string, unknown>[]): fc.Arbitrary<unknown> {
  const anything = fc.jsonValue({ maxDepth: 3 });
  return fc
    .tuple(fc.integer({ min: 0, max: corpus.length - 1 }), fc.array(fc.tuple(fc.nat(), anything, fc.boolean()), { maxLength: 4 }))
    .map(([i, edits]) => {
      const base = structuredClone(corpus[i]!) as Record<string, unknown>;
      for (const [pick, value, deep] of edits) {
        const keys = Object.keys(base);
        if (keys.length === 0) break;
        const key = keys[pick % keys.length]!;
        const inner = base[key];
        if (deep && inner && typeof inner === 'object' && !Array.isArray(inner)) {
          const innerKeys = Object.keys(inner);
          if (innerKeys.length) (inner as Record<string, unknown>)[innerKeys[pick % innerKeys.length]!] = value;
        } else base[key] = value;
      }
      return base;
    });
}
