/**
 * One prom-client registry per process (never the global default), so two servers started in
 * one test process keep separate figures. Metric names carry a project prefix, or LiveKit's
 * own names where LiveKit has one; labels stay low-cardinality (never a room or user id).
 */
import { Counter, Registry, collectDefaultMetrics } from 'prom-client';
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

/** Where a fault was caught: one request's handler, or the process-level nets of common/process.ts. */
export type FaultKind = 'request' | 'uncaught_exception' | 'unhandled_rejection';

export const FAULTS_METRIC = 'matrixrtc_faults_total';

/**
 * The fault counter of `registry` (made on first use, then shared by everything counting into
 * that registry): the request error handlers of every listener and the process-level nets.
 */
export function faultCounter(registry: Registry): Counter<'kind'> {
  const existing = registry.getSingleMetric(FAULTS_METRIC);
  if (existing) return existing as Counter<'kind'>;
  return new Counter({
    name: FAULTS_METRIC,
    help: 'Unexpected exceptions caught, by where: a request answered 500, or an uncaught exception / unhandled rejection at process level',
    labelNames: ['kind'],
    registers: [registry],
  });
}
