/**
 * Agent dispatch metrics of one SFU (prefix `matrixrtc_sfu_agent_`): registered workers and job
 * outcomes. Labels are fixed small sets (never an agent name, room or job id).
 */
import { Counter, Gauge, type Registry } from 'prom-client';

export type JobOutcome = 'assigned' | 'resumed' | 'no_worker' | 'succeeded' | 'failed';

export interface AgentMetrics {
  workers: Gauge;
  jobs: Counter<'outcome'>;
}

export function createAgentMetrics(registry: Registry): AgentMetrics {
  const registers = [registry];
  return {
    workers: new Gauge({ name: 'matrixrtc_sfu_agent_workers', help: 'Agent workers registered on this node', registers }),
    jobs: new Counter({
      name: 'matrixrtc_sfu_agent_jobs_total',
      help: 'Agent jobs by outcome: assigned to a worker, resumed on another worker, no worker took it, ended succeeded or failed',
      labelNames: ['outcome'],
      registers,
    }),
  };
}
