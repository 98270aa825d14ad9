/**
 * This node's load, measured cheaply over a window on the injected clock: CPU the process used
 * (process.cpuUsage deltas, in cores) and media bytes in + out per second (the packet counters
 * of sfu/metrics.ts). The room manager asks `overloaded(...)` before admitting a join; above a
 * limit the join is refused with LiveKit's 503 "node has exceeded its configured limit"
 * (LiveKit pkg/service/utils.go ValidateConnectRequest, selector.LimitsReached), so the calls
 * already running keep their quality instead of every call degrading.
 *
 * Lifecycle: `createLoadMonitor(deps)` starts sampling every `window_seconds`; `stop()` ends it.
 */
import { repeatEvery, type Clock } from '../../common/clock.ts';
import type { Logger } from '../../common/logger.ts';
import type { SfuConfig } from '../config.ts';

export interface CpuTimes {
  /** Microseconds, as process.cpuUsage() reports them. */
  user: number;
  system: number;
}

export interface LoadMonitorDeps {
  config: Pick<SfuConfig, 'limit' | 'overload'>;
  clock: Clock;
  logger: Logger;
  /** CPU time of this process so far; process.cpuUsage when absent. */
  cpuUsage?: () => CpuTimes;
  /** Media bytes received + sent so far (RTP); none counted when absent. */
  mediaBytes?: () => number;
}

/** What the room manager counts itself (it owns the rooms). */
export interface NodeCounts {
  participants: number;
  /** Published tracks (in) + subscriptions (out), as LiveKit's NumTracksIn + NumTracksOut. */
  tracks: number;
}

export interface LoadMonitor {
  /** CPU cores used over the last complete window (0 before the first one). */
  cpuLoad(): number;
  /** Media bytes per second over the last complete window. */
  bytesPerSec(): number;
  /** Which limit a new join would break, or undefined. */
  overloaded(counts: NodeCounts): string | undefined;
  stop(): void;
}

export function createLoadMonitor(deps: LoadMonitorDeps): LoadMonitor {
  const { limit, overload } = deps.config;
  const cpuUsage = deps.cpuUsage ?? (() => process.cpuUsage());
  const mediaBytes = deps.mediaBytes ?? (() => 0);
  const windowMs = overload.window_seconds * 1000;
  let lastAt = deps.clock.now();
  let lastCpu = cpuUsage();
  let lastBytes = mediaBytes();
  let cpu = 0;
  let rate = 0;
  let wasOver = false;

  const sample = () => {
    const now = deps.clock.now();
    const elapsedMs = now - lastAt;
    if (elapsedMs <= 0) return;
    const c = cpuUsage();
    const b = mediaBytes();
    cpu = (c.user - lastCpu.user + c.system - lastCpu.system) / 1000 / elapsedMs;
    rate = ((b - lastBytes) * 1000) / elapsedMs;
    lastAt = now;
    lastCpu = c;
    lastBytes = b;
    const over = overload.cpu_load_limit > 0 && cpu > overload.cpu_load_limit;
    if (over !== wasOver) {
      wasOver = over;
      if (over) deps.logger.warn({ cpu, limit: overload.cpu_load_limit }, 'CPU over overload.cpu_load_limit: refusing new joins');
      else deps.logger.info({ cpu }, 'CPU back under overload.cpu_load_limit: accepting joins');
    }
  };
  const repeating = repeatEvery(deps.clock, windowMs, sample, (err) => deps.logger.error({ err }, 'load sample failed'));
  repeating.start();

  return {
    cpuLoad: () => cpu,
    bytesPerSec: () => rate,
    overloaded(counts) {
      if (overload.max_participants > 0 && counts.participants >= overload.max_participants) return 'overload.max_participants';
      if (overload.cpu_load_limit > 0 && cpu > overload.cpu_load_limit) return 'overload.cpu_load_limit';
      if (limit.num_tracks > 0 && counts.tracks >= limit.num_tracks) return 'limit.num_tracks';
      if (limit.bytes_per_sec > 0 && rate >= limit.bytes_per_sec) return 'limit.bytes_per_sec';
      return undefined;
    },
    stop: () => repeating.stop(),
  };
}
