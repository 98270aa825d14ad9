/**
 * Reads a V8 heap snapshot (`.heapsnapshot`, as v8.writeHeapSnapshot or --heapsnapshot-signal
 * write it) without JSON.parse of the whole file (a snapshot of a busy SFU passes V8's string
 * limit): the `nodes` and `edges` arrays are scanned as numbers straight from the bytes into
 * typed arrays, only the header and the `strings` table are JSON. Then the dominator tree
 * (Cooper, Harvey and Kennedy's iterative algorithm over a post-order from the root, weak edges
 * ignored) gives each object's retained size, and `summarise` groups nodes by class as DevTools'
 * Summary view does: per class the count, the self size and the retained size of the
 * instances not held by another instance of the same class (so a class's retained total counts
 * nothing twice). For bench/sfu-memory.ts; pure functions, no I/O but `readHeapSnapshot`.
 */
import { readFileSync } from 'node:fs';

export interface HeapSnapshot {
  nodeFields: number;
  /** Flat, `nodeFields` per node: type, name, id, self_size, edge_count, … */
  nodes: Float64Array;
  /** Flat, 3 per edge: type, name_or_index, to_node (an offset into `nodes`). */
  edges: Uint32Array;
  strings: string[];
  nodeTypes: string[];
  edgeTypes: string[];
  typeOffset: number;
  nameOffset: number;
  selfSizeOffset: number;
  edgeCountOffset: number;
}

export interface ClassSummary {
  name: string;
  count: number;
  selfBytes: number;
  /** Retained size of the instances that no other instance of this class holds. */
  retainedBytes: number;
}

/** Parses unsigned integers of a JSON number array starting at `from` (the byte after '['). */
function scanNumbers(buf: Buffer, from: number, count: number, out: { set(i: number, v: number): void }): number {
  let i = from;
  let n = 0;
  let value = 0;
  let inNumber = false;
  for (; n < count && i < buf.length; i++) {
    const c = buf[i]!;
    if (c >= 48 && c <= 57) {
      value = value * 10 + (c - 48);
      inNumber = true;
    } else {
      if (inNumber) {
        out.set(n++, value);
        value = 0;
        inNumber = false;
      }
      if (c === 93) break; // ']'
    }
  }
  if (inNumber && n < count) out.set(n++, value);
  if (n !== count) throw new Error(`heap snapshot: expected ${count} numbers, read ${n}`);
  return i;
}

export function parseHeapSnapshot(buf: Buffer): HeapSnapshot {
  const nodesAt = buf.indexOf('"nodes":[');
  const edgesAt = buf.indexOf('"edges":[', nodesAt);
  const stringsAt = buf.lastIndexOf('"strings":[');
  if (nodesAt < 0 || edgesAt < 0 || stringsAt < 0) throw new Error('heap snapshot: nodes/edges/strings not found');
  const header = JSON.parse(`${buf.toString('utf8', 0, buf.lastIndexOf(',', nodesAt))}}`) as {
    snapshot: { meta: { node_fields: string[]; node_types: [string[]]; edge_fields: string[]; edge_types: [string[]] }; node_count: number; edge_count: number };
  };
  const meta = header.snapshot.meta;
  const nodeFields = meta.node_fields.length;
  if (meta.edge_fields.length !== 3) throw new Error('heap snapshot: unknown edge layout');
  const nodes = new Float64Array(header.snapshot.node_count * nodeFields);
  scanNumbers(buf, nodesAt + 9, nodes.length, { set: (i, v) => (nodes[i] = v) });
  const edges = new Uint32Array(header.snapshot.edge_count * 3);
  scanNumbers(buf, edgesAt + 9, edges.length, { set: (i, v) => (edges[i] = v) });
  const stringsEnd = buf.lastIndexOf(']');
  const strings = JSON.parse(buf.toString('utf8', stringsAt + 10, stringsEnd + 1)) as string[];
  return {
    nodeFields,
    nodes,
    edges,
    strings,
    nodeTypes: meta.node_types[0],
    edgeTypes: meta.edge_types[0],
    typeOffset: meta.node_fields.indexOf('type'),
    nameOffset: meta.node_fields.indexOf('name'),
    selfSizeOffset: meta.node_fields.indexOf('self_size'),
    edgeCountOffset: meta.node_fields.indexOf('edge_count'),
  };
}

export function readHeapSnapshot(path: string): HeapSnapshot {
  return parseHeapSnapshot(readFileSync(path));
}

/** The class a node is counted under: constructor name for objects, `(type) name` otherwise. */
export function classOf(s: HeapSnapshot, node: number): string {
  const base = node * s.nodeFields;
  const type = s.nodeTypes[s.nodes[base + s.typeOffset]!] ?? 'unknown';
  const name = s.strings[s.nodes[base + s.nameOffset]!] ?? '';
  switch (type) {
    case 'object':
    case 'native':
      return name;
    case 'string':
    case 'concatenated string':
    case 'sliced string':
      return '(string)';
    case 'number':
    case 'bigint':
    case 'code':
      return `(${type})`;
    default:
      return `(${type}) ${name.length > 60 ? `${name.slice(0, 60)}…` : name}`;
  }
}

/** Retained size per node (index = node ordinal), from the dominator tree rooted at node 0. */
export function retainedSizes(s: HeapSnapshot): { retained: Float64Array; idom: Int32Array; order: Int32Array } {
  const n = s.nodes.length / s.nodeFields;
  const firstEdge = new Uint32Array(n + 1);
  for (let i = 0; i < n; i++) firstEdge[i + 1] = firstEdge[i]! + s.nodes[i * s.nodeFields + s.edgeCountOffset]! * 3;
  const weak = s.edgeTypes.indexOf('weak');
  // Post-order of a DFS from the root (iterative), over strong edges.
  const post = new Int32Array(n).fill(-1);
  const order = new Int32Array(n);
  const visited = new Uint8Array(n);
  const stackNode = new Int32Array(n);
  const stackEdge = new Uint32Array(n);
  let sp = 0;
  let count = 0;
  stackNode[0] = 0;
  stackEdge[0] = firstEdge[0]!;
  visited[0] = 1;
  sp = 1;
  while (sp > 0) {
    const v = stackNode[sp - 1]!;
    const e = stackEdge[sp - 1]!;
    if (e < firstEdge[v + 1]!) {
      stackEdge[sp - 1] = e + 3;
      if (s.edges[e] === weak) continue;
      const w = s.edges[e + 2]! / s.nodeFields;
      if (!visited[w]) {
        visited[w] = 1;
        stackNode[sp] = w;
        stackEdge[sp] = firstEdge[w]!;
        sp++;
      }
    } else {
      post[v] = count;
      order[count++] = v;
      sp--;
    }
  }
  // Predecessors (strong edges between reachable nodes), compressed rows.
  const predCount = new Uint32Array(n + 1);
  for (let v = 0; v < n; v++) {
    if (post[v]! < 0) continue;
    for (let e = firstEdge[v]!; e < firstEdge[v + 1]!; e += 3) {
      if (s.edges[e] === weak) continue;
      predCount[s.edges[e + 2]! / s.nodeFields + 1]!++;
    }
  }
  for (let i = 0; i < n; i++) predCount[i + 1]! += predCount[i]!;
  const preds = new Int32Array(predCount[n]!);
  const fill = predCount.slice(0, n);
  for (let v = 0; v < n; v++) {
    if (post[v]! < 0) continue;
    for (let e = firstEdge[v]!; e < firstEdge[v + 1]!; e += 3) {
      if (s.edges[e] === weak) continue;
      preds[fill[s.edges[e + 2]! / s.nodeFields]!++] = v;
    }
  }
  // Dominators, in post-order numbers; the root is the last in post-order.
  const root = count - 1;
  const doms = new Int32Array(count).fill(-1);
  doms[root] = root;
  let changed = true;
  while (changed) {
    changed = false;
    for (let p = root - 1; p >= 0; p--) {
      const v = order[p]!;
      let idom = -1;
      for (let k = predCount[v]!; k < predCount[v + 1]!; k++) {
        let q = post[preds[k]!]!;
        if (doms[q] === -1) continue;
        if (idom === -1) {
          idom = q;
          continue;
        }
        let a = idom;
        while (a !== q) {
          while (a < q) a = doms[a]!;
          while (q < a) q = doms[q]!;
        }
        idom = a;
      }
      if (idom !== -1 && doms[p] !== idom) {
        doms[p] = idom;
        changed = true;
      }
    }
  }
  const retained = new Float64Array(n);
  const idomOut = new Int32Array(n).fill(-1);
  for (let p = 0; p < count; p++) retained[order[p]!] = s.nodes[order[p]! * s.nodeFields + s.selfSizeOffset]!;
  for (let p = 0; p < root; p++) {
    const v = order[p]!;
    const d = order[doms[p]!]!;
    idomOut[v] = d;
    retained[d]! += retained[v]!;
  }
  return { retained, idom: idomOut, order: order.subarray(0, count) };
}

/** What the top-level instances of one class hold, by the edge that holds it and its class. */
export interface DetailRow {
  /** `edge name: class`, or `(held indirectly)` for what is dominated through other objects. */
  key: string;
  retainedBytes: number;
  count: number;
}

export interface Summary {
  classes: Map<string, ClassSummary>;
  /** Per class asked for in `detail`: its top-level instances' direct holdings, largest first. */
  details: Map<string, DetailRow[]>;
  /** Per class asked for in `detail`: who holds its top-level instances (`class.edge` of the dominator). */
  heldBy: Map<string, DetailRow[]>;
}

function edgeName(s: HeapSnapshot, e: number): string {
  const type = s.edgeTypes[s.edges[e]!];
  const name = s.edges[e + 1]!;
  return type === 'element' || type === 'hidden' ? `[${name}]` : (s.strings[name] ?? String(name));
}

/** The name of an edge from `from` to `to`, if there is one. */
function edgeBetween(s: HeapSnapshot, firstEdge: Uint32Array, from: number, to: number): string | undefined {
  for (let e = firstEdge[from]!; e < firstEdge[from + 1]!; e += 3) if (s.edges[e + 2]! / s.nodeFields === to) return edgeName(s, e);
  return undefined;
}

function addTo(table: Map<string, Map<string, DetailRow>>, name: string, key: string, bytes: number): void {
  let byKey = table.get(name);
  if (!byKey) table.set(name, (byKey = new Map()));
  const row = byKey.get(key) ?? { key, retainedBytes: 0, count: 0 };
  row.retainedBytes += bytes;
  row.count++;
  byKey.set(key, row);
}

function sorted(table: Map<string, Map<string, DetailRow>>): Map<string, DetailRow[]> {
  return new Map([...table].map(([name, byKey]) => [name, [...byKey.values()].toSorted((a, b) => b.retainedBytes - a.retainedBytes)]));
}

/**
 * Per class: count, self bytes, and retained bytes without double counting (see file comment);
 * for the classes in `detail`, what their instances retain, by holding edge.
 */
export function summarise(s: HeapSnapshot, detail: string[] = []): Summary {
  const { retained, idom, order } = retainedSizes(s);
  const n = s.nodes.length / s.nodeFields;
  const classIds = new Int32Array(n);
  const names: string[] = [];
  const ids = new Map<string, number>();
  for (let v = 0; v < n; v++) {
    const name = classOf(s, v);
    let id = ids.get(name);
    if (id === undefined) {
      id = names.length;
      ids.set(name, id);
      names.push(name);
    }
    classIds[v] = id;
  }
  // An instance counts towards its class's retained total when no dominator of it has its class:
  // a depth-first walk of the dominator tree keeps, per class, how many instances are open above.
  const childStart = new Uint32Array(n + 1);
  for (let p = 0; p < order.length; p++) {
    const d = idom[order[p]!]!;
    if (d >= 0) childStart[d + 1]!++;
  }
  for (let i = 0; i < n; i++) childStart[i + 1]! += childStart[i]!;
  const children = new Int32Array(childStart[n]!);
  const fill = childStart.slice(0, n);
  for (let p = 0; p < order.length; p++) {
    const v = order[p]!;
    const d = idom[v]!;
    if (d >= 0) children[fill[d]!++] = v;
  }
  const open = new Int32Array(names.length);
  const detailIds = new Set(detail.map((d) => ids.get(d)).filter((id) => id !== undefined));
  const detailed: number[] = [];
  const out = names.map((name) => ({ name, count: 0, selfBytes: 0, retainedBytes: 0 }));
  const stackNode = new Int32Array(order.length);
  const stackChild = new Uint32Array(order.length);
  const enter = (v: number, depth: number) => {
    const c = classIds[v]!;
    const entry = out[c]!;
    entry.count++;
    entry.selfBytes += s.nodes[v * s.nodeFields + s.selfSizeOffset]!;
    if (open[c] === 0) {
      entry.retainedBytes += retained[v]!;
      if (detailIds.has(c)) detailed.push(v);
    }
    open[c]!++;
    stackNode[depth] = v;
    stackChild[depth] = childStart[v]!;
  };
  let sp = 0;
  enter(order[order.length - 1]!, sp++);
  while (sp > 0) {
    const v = stackNode[sp - 1]!;
    const k = stackChild[sp - 1]!;
    if (k < childStart[v + 1]!) {
      stackChild[sp - 1] = k + 1;
      enter(children[k]!, sp++);
    } else {
      open[classIds[v]!]!--;
      sp--;
    }
  }
  const firstEdge = new Uint32Array(n + 1);
  for (let i = 0; i < n; i++) firstEdge[i + 1] = firstEdge[i]! + s.nodes[i * s.nodeFields + s.edgeCountOffset]! * 3;
  const rows = new Map<string, Map<string, DetailRow>>();
  const holders = new Map<string, Map<string, DetailRow>>();
  for (const v of detailed) {
    const name = names[classIds[v]!]!;
    const add = (key: string, bytes: number) => addTo(rows, name, key, bytes);
    const d = idom[v]!;
    const via = d >= 0 ? (edgeBetween(s, firstEdge, d, v) ?? '(indirect)') : '';
    addTo(holders, name, `${d >= 0 ? names[classIds[d]!] : '(root)'} .${via}`, retained[v]!);
    let direct = s.nodes[v * s.nodeFields + s.selfSizeOffset]!;
    add('(self)', direct);
    const seen = new Set<number>();
    for (let e = firstEdge[v]!; e < firstEdge[v + 1]!; e += 3) {
      const t = s.edges[e + 2]! / s.nodeFields;
      if (idom[t] !== v || seen.has(t)) continue;
      seen.add(t);
      add(`${edgeName(s, e)}: ${names[classIds[t]!]}`, retained[t]!);
      direct += retained[t]!;
    }
    if (retained[v]! > direct) add('(held indirectly)', retained[v]! - direct);
  }
  return { classes: new Map(out.map((e) => [e.name, e])), details: sorted(rows), heldBy: sorted(holders) };
}

/** Total self size of the reachable nodes (what the heap holds, as the snapshot saw it). */
export function totalBytes(summary: Map<string, ClassSummary>): number {
  let sum = 0;
  for (const e of summary.values()) sum += e.selfBytes;
  return sum;
}
