/**
 * The heap snapshot reader of bench/sfu-memory.ts (bench/_heap-snapshot.ts): retained sizes from
 * the dominator tree on a hand-made graph whose answers are known, and per-class figures from a
 * real snapshot of this process.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { writeHeapSnapshot } from 'node:v8';
import { describe, expect, it } from 'vitest';
import { parseHeapSnapshot, readHeapSnapshot, summarise } from '../../bench/_heap-snapshot.ts';

const NODE_TYPES = ['hidden', 'array', 'string', 'object', 'code', 'closure', 'regexp', 'number', 'native', 'synthetic'];
const EDGE_TYPES = ['context', 'element', 'property', 'internal', 'hidden', 'shortcut', 'weak'];

/** A snapshot in V8's layout from nodes [type, name, self size] and edges [from, type, name, to]. */
function snapshotOf(nodes: [string, string, number][], edges: [number, string, string, number][]): Buffer {
  const strings: string[] = [];
  const str = (s: string) => (strings.includes(s) ? strings.indexOf(s) : strings.push(s) - 1);
  const flatNodes = nodes.flatMap(([type, name, size], i) => [NODE_TYPES.indexOf(type), str(name), i * 2 + 1, size, edges.filter((e) => e[0] === i).length, 0]);
  const flatEdges = nodes.flatMap((_, i) => edges.filter((e) => e[0] === i).flatMap(([, type, name, to]) => [EDGE_TYPES.indexOf(type), str(name), to * 6]));
  const meta = {
    node_fields: ['type', 'name', 'id', 'self_size', 'edge_count', 'detachedness'],
    node_types: [NODE_TYPES, 'string', 'number', 'number', 'number', 'number'],
    edge_fields: ['type', 'name_or_index', 'to_node'],
    edge_types: [EDGE_TYPES, 'string_or_number', 'node'],
  };
  // V8 writes one node per line; the reader must not care.
  const text = `{"snapshot":{"meta":${JSON.stringify(meta)},"node_count":${nodes.length},"edge_count":${flatEdges.length / 3}},\n"nodes":[${flatNodes.join(',')}],\n"edges":[${flatEdges.join(',\n')}],\n"strings":${JSON.stringify(strings)}}`;
  return Buffer.from(text);
}

describe('heap snapshot summary', () => {
  it('counts what only one object keeps alive towards its retained size, once per class', () => {
    const buf = snapshotOf(
      [
        ['synthetic', '', 0], // 0 root
        ['object', 'Pc', 100], // 1
        ['object', 'Other', 10], // 2
        ['object', 'Pc', 50], // 3: held only by 1 (another Pc)
        ['native', 'Buf', 1000], // 4: held by 1, and weakly by 2
        ['native', 'Buf', 30], // 5: held by 1 and 2
      ],
      [
        [0, 'shortcut', 'a', 1],
        [0, 'shortcut', 'b', 2],
        [1, 'property', 'inner', 3],
        [1, 'property', 'data', 4],
        [1, 'property', 'shared', 5],
        [2, 'weak', 'data', 4],
        [2, 'property', 'shared', 5],
      ],
    );
    const { classes, details, heldBy } = summarise(parseHeapSnapshot(buf), ['Pc']);
    expect(classes.get('Pc')).toEqual({ name: 'Pc', count: 2, selfBytes: 150, retainedBytes: 1150 });
    expect(classes.get('Buf')).toEqual({ name: 'Buf', count: 2, selfBytes: 1030, retainedBytes: 1030 });
    expect(classes.get('Other')?.retainedBytes).toBe(10);
    expect(details.get('Pc')).toEqual([
      { key: 'data: Buf', retainedBytes: 1000, count: 1 },
      { key: '(self)', retainedBytes: 100, count: 1 },
      { key: 'inner: Pc', retainedBytes: 50, count: 1 },
    ]);
    expect(heldBy.get('Pc')).toEqual([{ key: '(synthetic)  .a', retainedBytes: 1150, count: 1 }]);
  });

  it('finds the instances of a class and what they hold in a real snapshot of this process', { timeout: 60_000 }, () => {
    class HeapSnapshotMarker {
      readonly payload = new Uint8Array(4096);
    }
    const kept = Array.from({ length: 200 }, () => new HeapSnapshotMarker());
    const dir = mkdtempSync(join(tmpdir(), 'heap-snapshot-test-'));
    try {
      const file = writeHeapSnapshot(join(dir, 'test.heapsnapshot'));
      const { classes } = summarise(readHeapSnapshot(file));
      const marker = classes.get('HeapSnapshotMarker');
      expect(marker?.count).toBe(kept.length);
      expect(marker!.retainedBytes).toBeGreaterThanOrEqual(kept.length * 4096);
      expect(marker!.retainedBytes).toBeLessThan(kept.length * 4096 * 2);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
