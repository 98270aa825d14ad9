/**
 * The appservice side's Prometheus metrics, registered on the process registry passed in
 * (never the global one). Labels are low-cardinality: outcome and event kind only. Active calls
 * and members are read from the store at scrape time, so replicas sharing Redis agree.
 */
import { Counter, Gauge, Histogram, type Registry } from 'prom-client';
import type { BridgeStore } from '../store/store.ts';

export interface BridgeMetrics {
  /** Transactions by outcome: processed, duplicate, failed, unauthorized, forbidden, busy. */
  transactions: Counter<'outcome'>;
  /** Events by kind: call_member_join, call_member_leave, room_member, redaction, forged, ... */
  events: Counter<'kind'>;
  forged: Counter;
  listenerErrors: Counter;
  /** SFU RoomService calls by operation and outcome. */
  sfuCalls: Counter<'op' | 'outcome'>;
  /** Seconds from a leave (event origin_server_ts, or expiry) to the first present identity's removal. */
  leaveToRemoval: Histogram;
  /** Plain `{}` leaves by what their grace did: waiting, cancelled (membership came back), removed, late (seen after it). */
  leaveGrace: Counter<'outcome'>;
  reconcileRuns: Counter<'outcome'>;
  reconcileRepairs: Counter<'action'>;
  gauges: Gauge[];
}

export function createBridgeMetrics(registry: Registry, store?: BridgeStore): BridgeMetrics {
  const m: BridgeMetrics = {
    transactions: new Counter({
      name: 'matrixrtc_bridge_appservice_transactions_total',
      help: 'Appservice transactions received from the homeserver, by outcome',
      labelNames: ['outcome'],
      registers: [registry],
    }),
    events: new Counter({
      name: 'matrixrtc_bridge_appservice_events_total',
      help: 'Matrix events processed by the appservice, by kind',
      labelNames: ['kind'],
      registers: [registry],
    }),
    forged: new Counter({
      name: 'matrixrtc_bridge_forged_memberships_total',
      help: 'Call membership events ignored because their key or member names another user than the sender',
      registers: [registry],
    }),
    listenerErrors: new Counter({
      name: 'matrixrtc_bridge_lifecycle_errors_total',
      help: 'Membership changes the SFU room lifecycle failed to act on',
      registers: [registry],
    }),
    sfuCalls: new Counter({
      name: 'matrixrtc_bridge_sfu_calls_total',
      help: 'RoomService calls made to the SFU, by operation and outcome',
      labelNames: ['op', 'outcome'],
      registers: [registry],
    }),
    leaveToRemoval: new Histogram({
      name: 'matrixrtc_bridge_leave_to_removal_seconds',
      help: 'Time from a call leave (event timestamp or expiry) to the SFU participant removal; includes the leave grace of a plain {} leave',
      buckets: [0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 15, 30],
      registers: [registry],
    }),
    leaveGrace: new Counter({
      name: 'matrixrtc_bridge_leave_grace_total',
      help: 'Plain {} call leaves by what their grace did: waiting (started), cancelled (the membership came back, participant kept), removed (grace ended), late (seen after its grace, acted at once)',
      labelNames: ['outcome'],
      registers: [registry],
    }),
    reconcileRuns: new Counter({
      name: 'matrixrtc_bridge_reconcile_runs_total',
      help: 'Reconcile passes, by outcome (ok, partial = some homeserver reads failed and their rooms were left alone, failed)',
      labelNames: ['outcome'],
      registers: [registry],
    }),
    reconcileRepairs: new Counter({
      name: 'matrixrtc_bridge_reconcile_repairs_total',
      help: 'Drift repaired by reconcile, by action',
      labelNames: ['action'],
      registers: [registry],
    }),
    gauges: [],
  };
  if (store) {
    // Registered on `registry` by their constructors; read from the store at scrape time.
    m.gauges.push(new Gauge({
      name: 'matrixrtc_bridge_active_calls',
      help: 'Matrix rooms with at least one tracked call membership',
      registers: [registry],
      async collect() {
        this.set((await store.listCallRooms()).length);
      },
    }));
    m.gauges.push(new Gauge({
      name: 'matrixrtc_bridge_active_call_members',
      help: 'Tracked call memberships (devices in calls)',
      registers: [registry],
      async collect() {
        let n = 0;
        for (const r of await store.listCallRooms()) n += (await store.listMemberships(r)).length;
        this.set(n);
      },
    }));
  }
  return m;
}
