/**
 * One prom-client registry per process (never the global default), so two servers started in
 * one test process keep separate figures. Metric names carry a project prefix, or LiveKit's
 * own names where LiveKit has one; labels stay low-cardinality (never a room or user id).
 */
import { Registry, collectDefaultMetrics } from 'prom-client';
import type { IncomingMessage, ServerResponse } from 'node:http';

export function createMetricsRegistry(opts: { defaultMetrics?: boolean } = {}): Registry {
  const registry = new Registry();
  if (opts.defaultMetrics !== false) collectDefaultMetrics({ register: registry });
  return registry;
}

/** Answers a Prometheus scrape from the given registries (merged). */
export async function serveMetrics(
  registries: Registry[],
  _req: IncomingMessage,
  res: ServerResponse,
): Promise<void> {
  try {
    const merged = registries.length === 1 ? registries[0]! : Registry.merge(registries);
    const body = await merged.metrics();
    res.writeHead(200, { 'Content-Type': merged.contentType });
    res.end(body);
  } catch (err) {
    res.writeHead(500, { 'Content-Type': 'text/plain' });
    res.end(`metrics unavailable: ${(err as Error).message}`);
  }
}
