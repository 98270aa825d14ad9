/**
 * LiveKit's node selectors (livekit/livekit pkg/routing/selector: any, cpuload, sysload,
 * regionaware; sort_by as in utils.go SelectSortedNode), over the nodes of our registry. Pure
 * functions: the Redis router hands in the live nodes, `pick` chooses one or says none fits.
 */
import type { SfuConfig } from '../config.ts';
import type { NodeInfo } from './types.ts';

export type SelectorConfig = Pick<SfuConfig, 'node_selector' | 'region'>;

export class NoNodeAvailableError extends Error {
  constructor(why: string) {
    super(`could not find any available nodes: ${why}`);
    this.name = 'NoNodeAvailableError';
  }
}

const EARTH_RADIUS_M = 6_378_100;

const rad = (d: number) => (d * Math.PI) / 180;
const hsin = (t: number) => Math.sin(t / 2) ** 2;

/** Great-circle distance (haversine), metres. */
export function distanceBetween(lat1: number, lon1: number, lat2: number, lon2: number): number {
  const h = hsin(rad(lat2) - rad(lat1)) + Math.cos(rad(lat1)) * Math.cos(rad(lat2)) * hsin(rad(lon2) - rad(lon1));
  return 2 * EARTH_RADIUS_M * Math.asin(Math.sqrt(h));
}

function sortKey(sortBy: SfuConfig['node_selector']['sort_by'], n: NodeInfo): number {
  switch (sortBy) {
    case 'sysload':
      return n.stats.sysload;
    case 'cpuload':
      return n.stats.cpuLoad;
    case 'rooms':
      return n.stats.rooms;
    case 'clients':
      return n.stats.participants;
    case 'tracks':
      return n.stats.tracks;
    case 'bytespersec':
      return n.stats.bytesPerSec;
    case 'random':
      return 0;
  }
}

function sorted(nodes: NodeInfo[], sortBy: SfuConfig['node_selector']['sort_by'], random: () => number): NodeInfo {
  if (sortBy === 'random') return nodes[Math.floor(random() * nodes.length) % nodes.length]!;
  let best = nodes[0]!;
  for (const n of nodes) if (sortKey(sortBy, n) < sortKey(sortBy, best)) best = n;
  return best;
}

/**
 * Picks the node for a new room among `nodes` (already only live, serving ones). Throws
 * NoNodeAvailableError when the selector's limits leave none.
 */
export function pickNode(cfg: SelectorConfig, nodes: NodeInfo[], random: () => number = Math.random): NodeInfo {
  const ns = cfg.node_selector;
  if (nodes.length === 0) throw new NoNodeAvailableError('no serving node');
  let candidates = nodes;
  if (ns.kind === 'cpuload') {
    candidates = nodes.filter((n) => n.stats.cpuLoad < ns.cpu_load_limit);
    if (!candidates.length) throw new NoNodeAvailableError(`every node is at node_selector.cpu_load_limit ${ns.cpu_load_limit}`);
  } else if (ns.kind === 'sysload' || ns.kind === 'regionaware') {
    candidates = nodes.filter((n) => n.stats.sysload < ns.sysload_limit);
    if (!candidates.length) throw new NoNodeAvailableError(`every node is at node_selector.sysload_limit ${ns.sysload_limit}`);
  }
  if (ns.kind === 'regionaware') {
    const here = ns.regions.find((r) => r.name === cfg.region);
    if (here) {
      const distance = new Map(ns.regions.map((r) => [r.name, distanceBetween(here.lat, here.lon, r.lat, r.lon)]));
      let nearest = Infinity;
      for (const n of candidates) nearest = Math.min(nearest, distance.get(n.region) ?? Infinity);
      const inNearest = candidates.filter((n) => (distance.get(n.region) ?? Infinity) === nearest);
      if (nearest !== Infinity && inNearest.length) candidates = inNearest;
    } else {
      // No coordinates configured: LiveKit prefers this node's own region.
      const same = candidates.filter((n) => n.region === cfg.region);
      if (same.length) candidates = same;
    }
  }
  return sorted(candidates, ns.sort_by, random);
}
