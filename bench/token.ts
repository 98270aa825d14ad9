/**
 * `npm run bench -- token`: throughput and latency of `POST /sfu/get` on the real token service
 * with a local TLS userinfo endpoint and the membership check on (MSC4502 is_joined on the fake
 * homeserver), the way Element Call calls it. Restricted homeserver, so no SFU is involved.
 * Prints requests/s and p50/p99 latency; figures only, nothing passes or fails on time.
 */
import { startTokenHarness } from '../test/integration/token-harness.ts';

const DURATION_MS = Number(process.env.BENCH_TOKEN_DURATION_MS ?? 5000);
const CONCURRENCY = Number(process.env.BENCH_TOKEN_CONCURRENCY ?? 32);
const ROOM = '!bench:example.com';

const round = (x: number) => Math.round(x * 100) / 100;

function percentile(sorted: number[], p: number): number {
  if (!sorted.length) return 0;
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))]!;
}

export async function run(): Promise<object> {
  const h = await startTokenHarness({ fullAccess: 'trusted.example.com' });
  try {
    const users = Array.from({ length: CONCURRENCY }, (_, i) => h.user(`bench${i}`, { joinedTo: [ROOM] }));
    const bodies = users.map((u) => JSON.stringify({ room: ROOM, openid_token: u.openid, device_id: 'BENCHDEV' }));
    const post = async (body: string) => {
      const t0 = performance.now();
      const res = await fetch(`${h.url}/sfu/get`, { method: 'POST', headers: { 'Content-Type': 'application/json' }, body });
      await res.arrayBuffer();
      return { ms: performance.now() - t0, ok: res.status === 200 };
    };
    // Warm-up: connections, JIT, resolution cache.
    await Promise.all(bodies.map((b) => post(b)));
    const latencies: number[] = [];
    let errors = 0;
    const started = performance.now();
    const deadline = started + DURATION_MS;
    await Promise.all(
      bodies.map(async (body) => {
        while (performance.now() < deadline) {
          const r = await post(body);
          latencies.push(r.ms);
          if (!r.ok) errors++;
        }
      }),
    );
    const elapsedS = (performance.now() - started) / 1000;
    const sorted = latencies.toSorted((a, b) => a - b);
    return {
      endpoint: 'POST /sfu/get',
      concurrency: CONCURRENCY,
      durationS: round(elapsedS),
      requests: latencies.length,
      errors,
      requestsPerSecond: round(latencies.length / elapsedS),
      latencyMs: { p50: round(percentile(sorted, 50)), p99: round(percentile(sorted, 99)), max: round(sorted.at(-1) ?? 0) },
      notes: 'userinfo over TLS on loopback (fake homeserver), membership via MSC4502 is_joined, restricted homeserver (no CreateRoom)',
    };
  } finally {
    await h.stop();
  }
}
