/**
 * Synapse's client event format v1 as the fake homeserver serialises it: `age` and
 * `unsigned.age` computed at send time, `user_id` = sender, `unsigned.prev_content` /
 * `prev_sender` / `replaces_state` for replaced state plus top-level `prev_content` and
 * `replaces_state` (not `prev_sender`), `redacts` at top level, and invite stripped state at
 * both levels (README rules 11-14). `withoutPrev` gives the shape of an event Synapse reloaded
 * from its database after a restart (rule 7): only `replaces_state` survives. A redacted event
 * has `unsigned.redacted_by` / `redacted_because` and a top-level `redacted_because`, and no
 * `prev_content` (cs-api/state-as-alice-msc3757.json). A sticky event (MSC4354, matrix-rtc.ts)
 * carries `msc4354_sticky` and, while sticky, `unsigned.msc4354_sticky_duration_ttl_ms`.
 */
import { stickyFields } from './matrix-rtc.ts';
import type { StoredEvent } from './model.ts';

export function formatEvent(ev: StoredEvent, now: number, opts: { withoutPrev?: boolean } = {}): Record<string, unknown> {
  const age = Math.max(0, now - ev.origin_server_ts);
  const unsigned: Record<string, unknown> = { age };
  const out: Record<string, unknown> = {
    age,
    content: ev.content,
    event_id: ev.event_id,
    origin_server_ts: ev.origin_server_ts,
    room_id: ev.room_id,
    sender: ev.sender,
    type: ev.type,
    unsigned,
    user_id: ev.sender,
  };
  if (ev.state_key !== undefined) out.state_key = ev.state_key;
  if (ev.redacts !== undefined) out.redacts = ev.redacts;
  if (ev.redacted_because) {
    const because = formatEvent(ev.redacted_because, now);
    unsigned.redacted_by = ev.redacted_because.event_id;
    unsigned.redacted_because = because;
    out.redacted_because = because;
  }
  if (ev.prev) {
    unsigned.replaces_state = ev.prev.event_id;
    out.replaces_state = ev.prev.event_id;
    if (!opts.withoutPrev && !ev.redacted_because) {
      unsigned.prev_content = ev.prev.content;
      unsigned.prev_sender = ev.prev.sender;
      out.prev_content = ev.prev.content;
    }
  }
  if (ev.invite_room_state) {
    unsigned.invite_room_state = ev.invite_room_state;
    out.invite_room_state = ev.invite_room_state;
  }
  const sticky = stickyFields(ev, now);
  if (sticky.top) out.msc4354_sticky = sticky.top;
  if (sticky.ttlMs !== undefined) unsigned.msc4354_sticky_duration_ttl_ms = sticky.ttlMs;
  return out;
}

/**
 * `?format=event` on `/state/{type}/{key}`: the event with `unsigned: {age_ts}`, and no `age`,
 * `event_id` or `user_id` (rule 30; cs-api/state-call-member-bob-msc3757-format-event.json).
 */
export function formatStateEventQuirk(ev: StoredEvent): Record<string, unknown> {
  const out: Record<string, unknown> = {
    type: ev.type,
    room_id: ev.room_id,
    sender: ev.sender,
    content: ev.content,
    state_key: ev.state_key,
    origin_server_ts: ev.origin_server_ts,
    unsigned: { age_ts: ev.origin_server_ts },
  };
  return out;
}
