/**
 * LiveKit's node selectors over registry entries: which node a new room goes to for each kind
 * and sort_by, and that nodes over a limit take no new rooms (table-driven).
 */
import { describe, expect, it } from 'vitest';
import { defaultSfuConfig } from '../config.ts';
import { distanceBetween, NoNodeAvailableError, pickNode, type SelectorConfig } from './selector.ts';
import type { NodeInfo, NodeStats } from './types.ts';

function node(id: string, stats: Partial<NodeStats> = {}, region = ''): NodeInfo {
  return {
    id,
    region,
    state: 'serving',
    signalUrl: `http://${id}`,
    nodeIp: '127.0.0.1',
    portRange: [1, 2],
    startedAt: 0,
    updatedAt: 0,
    stats: { cpuLoad: 0, sysload: 0, numCpus: 1, bytesPerSec: 0, packetsPerSec: 0, rooms: 0, participants: 0, tracks: 0, ...stats },
  };
}

function cfg(ns: Partial<SelectorConfig['node_selector']>, region = ''): SelectorConfig {
  return { region, node_selector: { ...defaultSfuConfig().node_selector, ...ns } };
}

const busy = node('busy', { cpuLoad: 0.95, sysload: 0.95, rooms: 9, participants: 90, tracks: 50, bytesPerSec: 9e6 });
const idle = node('idle', { cpuLoad: 0.1, sysload: 0.2, rooms: 1, participants: 3, tracks: 2, bytesPerSec: 1e3 });
const mid = node('mid', { cpuLoad: 0.5, sysload: 0.5, rooms: 4, participants: 40, tracks: 20, bytesPerSec: 1e5 });

describe('node selector', () => {
  it.each([
    ['any, sort_by rooms', { kind: 'any', sort_by: 'rooms' }, 'idle'],
    ['any, sort_by clients', { kind: 'any', sort_by: 'clients' }, 'idle'],
    ['any, sort_by tracks', { kind: 'any', sort_by: 'tracks' }, 'idle'],
    ['any, sort_by bytespersec', { kind: 'any', sort_by: 'bytespersec' }, 'idle'],
    ['cpuload, sort_by cpuload', { kind: 'cpuload', sort_by: 'cpuload' }, 'idle'],
    ['sysload, sort_by sysload', { kind: 'sysload', sort_by: 'sysload' }, 'idle'],
  ] as const)('%s picks the least loaded node', (_name, ns, want) => {
    expect(pickNode(cfg(ns), [busy, mid, idle]).id).toBe(want);
  });

  it('random sort spreads rooms over every node', () => {
    const seen = new Set<string>();
    let r = 0;
    for (let i = 0; i < 9; i++) seen.add(pickNode(cfg({ kind: 'any' }), [busy, mid, idle], () => (r = (r + 0.34) % 1)).id);
    expect(seen).toEqual(new Set(['busy', 'mid', 'idle']));
  });

  it.each([
    ['cpuload', { kind: 'cpuload', cpu_load_limit: 0.9 }],
    ['sysload', { kind: 'sysload', sysload_limit: 0.9 }],
  ] as const)('%s: a node above its limit takes no new room', (_name, ns) => {
    for (let i = 0; i < 20; i++) expect(pickNode(cfg(ns), [busy, mid], Math.random).id).toBe('mid');
    expect(() => pickNode(cfg(ns), [busy])).toThrow(NoNodeAvailableError);
  });

  it('regionaware picks a node of the nearest region with room under sysload_limit', () => {
    const regions = [
      { name: 'eu-west', lat: 53.35, lon: -6.26 },
      { name: 'eu-central', lat: 50.11, lon: 8.68 },
      { name: 'us-east', lat: 38.9, lon: -77.04 },
    ];
    const fra = node('fra', { sysload: 0.2 }, 'eu-central');
    const dub = node('dub', { sysload: 0.95 }, 'eu-west');
    const iad = node('iad', { sysload: 0.1 }, 'us-east');
    const c = cfg({ kind: 'regionaware', regions }, 'eu-west');
    // Dublin's own node is over the limit: Frankfurt is nearer than Virginia.
    expect(pickNode(c, [fra, dub, iad]).id).toBe('fra');
    expect(pickNode(c, [iad, dub]).id).toBe('iad');
    expect(distanceBetween(53.35, -6.26, 50.11, 8.68)).toBeLessThan(distanceBetween(53.35, -6.26, 38.9, -77.04));
  });

  it('refuses when no node is serving', () => {
    expect(() => pickNode(cfg({}), [])).toThrow(/could not find any available nodes/);
  });
});
