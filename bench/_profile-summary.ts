/**
 * Reads a V8 `.cpuprofile` (what `node --cpu-prof` writes) and sums self time per function:
 * each sample is charged its time delta to the node it landed in, nodes of the same function
 * (name + script + line) are merged. Returns the top functions, the share of the profile that was
 * idle / GC / program, and self time by where the code lives (werift, our sfu/, node internals).
 */
import { readFileSync } from 'node:fs';

interface CpuProfileNode {
  id: number;
  callFrame: { functionName: string; url: string; lineNumber: number };
}

interface CpuProfile {
  nodes: CpuProfileNode[];
  samples: number[];
  timeDeltas: number[];
  startTime: number;
  endTime: number;
}

export interface ProfileSummary {
  totalMs: number;
  idlePercent: number;
  gcPercent: number;
  /** Top functions by self time; `percentBusy` is of non-idle time. */
  top: { function: string; where: string; selfMs: number; percentBusy: number }[];
  /** Self time grouped by origin (werift, sfu, node:internal, …), percent of non-idle time. */
  byOrigin: Record<string, number>;
}

function origin(url: string, name: string): string {
  if (!url) return name.startsWith('(') ? name : 'native/builtin';
  if (url.includes('/node_modules/werift/')) return 'werift';
  if (url.includes('/node_modules/')) {
    const m = /node_modules\/((?:@[^/]+\/)?[^/]+)/.exec(url);
    return m ? m[1]! : 'node_modules';
  }
  if (url.startsWith('node:')) return 'node:internal';
  const m = /\/(sfu|common|bench|test)\//.exec(url);
  return m ? `${m[1]}/` : 'other';
}

function shortUrl(url: string): string {
  const i = url.indexOf('/node_modules/');
  if (i >= 0) return url.slice(i + '/node_modules/'.length);
  const j = url.search(/\/(sfu|common|bench|test)\//);
  return j >= 0 ? url.slice(j + 1) : url;
}

/**
 * `windows` (monotonic microseconds, the clock V8 stamps profiles with and
 * `process.hrtime` reads in any process) keeps only samples inside them, e.g. the steady-state
 * measurement windows without the joins in between.
 */
export function summariseCpuProfile(file: string, opts: { topN?: number; windows?: [number, number][] } = {}): ProfileSummary {
  const topN = opts.topN ?? 15;
  const profile = JSON.parse(readFileSync(file, 'utf8')) as CpuProfile;
  const byId = new Map(profile.nodes.map((n) => [n.id, n]));
  const selfUs = new Map<number, number>();
  const windows = opts.windows;
  let t = profile.startTime;
  for (let i = 0; i < profile.samples.length; i++) {
    const id = profile.samples[i]!;
    const delta = profile.timeDeltas[i] ?? 0;
    t += delta;
    if (windows && !windows.some(([a, b]) => t >= a && t <= b)) continue;
    selfUs.set(id, (selfUs.get(id) ?? 0) + delta);
  }
  const merged = new Map<string, { function: string; where: string; us: number; origin: string }>();
  let total = 0;
  let idle = 0;
  let gc = 0;
  for (const [id, us] of selfUs) {
    const node = byId.get(id);
    if (!node) continue;
    total += us;
    const { functionName, url, lineNumber } = node.callFrame;
    if (functionName === '(idle)') {
      idle += us;
      continue;
    }
    if (functionName === '(garbage collector)') gc += us;
    const name = functionName || '(anonymous)';
    const where = url ? `${shortUrl(url)}:${lineNumber + 1}` : '';
    const key = `${name}@${where}`;
    const entry = merged.get(key) ?? { function: name, where, us: 0, origin: origin(url, name) };
    entry.us += us;
    merged.set(key, entry);
  }
  const busy = Math.max(1, total - idle);
  const byOrigin: Record<string, number> = {};
  for (const e of merged.values()) byOrigin[e.origin] = (byOrigin[e.origin] ?? 0) + e.us;
  for (const k of Object.keys(byOrigin)) byOrigin[k] = Math.round((byOrigin[k]! / busy) * 1000) / 10;
  const top = [...merged.values()]
    .toSorted((a, b) => b.us - a.us)
    .slice(0, topN)
    .map((e) => ({ function: e.function, where: e.where, selfMs: Math.round(e.us / 1000), percentBusy: Math.round((e.us / busy) * 1000) / 10 }));
  return {
    totalMs: Math.round(total / 1000),
    idlePercent: Math.round((idle / Math.max(1, total)) * 1000) / 10,
    gcPercent: Math.round((gc / busy) * 1000) / 10,
    top,
    byOrigin: Object.fromEntries(Object.entries(byOrigin).toSorted((a, b) => b[1] - a[1])),
  };
}

/** The summary as a few printable lines. */
export function formatProfileSummary(s: ProfileSummary): string {
  const lines = [
    `profile: ${s.totalMs} ms sampled, ${s.idlePercent} % idle, GC ${s.gcPercent} % of busy time`,
    `self time by origin (% of busy): ${Object.entries(s.byOrigin)
      .slice(0, 8)
      .map(([k, v]) => `${k} ${v}`)
      .join(', ')}`,
    'top self-time functions (% of busy):',
    ...s.top.map((t) => `  ${t.percentBusy.toFixed(1).padStart(5)} %  ${t.function}  ${t.where}`),
  ];
  return lines.join('\n');
}
