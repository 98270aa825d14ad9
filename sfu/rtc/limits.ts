/**
 * The size and count limits of the session layer, as pure checks: LiveKit's `limit` block
 * (pkg/config/config.go LimitConfig; its Check* helpers, mirrored here with LiveKit's error
 * texts) and our own `signal_limits` (SDP, AddTrack, trickle). Where each is enforced:
 * - identity / room name length, metadata / attributes in the token: at join, before the
 *   WebSocket upgrade (room-manager.ts `checkJoin`; LiveKit pkg/service/utils.go
 *   ValidateConnectRequest and roommanager.go StartSession): HTTP 400 with LiveKit's text.
 * - name / metadata / attributes from `update_metadata`: RequestResponse LIMIT_EXCEEDED
 *   (participant.ts; LiveKit pkg/rtc/participant.go UpdateMetadata).
 * - the same from RoomService UpdateParticipant, room name and metadata from CreateRoom: Twirp
 *   `invalid_argument` (room-manager.ts; LiveKit pkg/service/roomservice.go).
 * - num_tracks / bytes_per_sec and our `overload` block: joins refused with 503 (load.ts).
 * - subscription_limit_*: further subscriptions wait for a free slot (room.ts; LiveKit
 *   pkg/rtc/subscriptionmanager.go hasCapacityForSubscription).
 */
import type { SfuConfig } from '../config.ts';

export type LimitConfig = SfuConfig['limit'];
export type SignalLimits = SfuConfig['signal_limits'];

/** LiveKit's texts (pkg/service/errors.go, pkg/rtc/errors.go). */
export const LIMIT_ERRORS = {
  roomName: 'room name length exceeds limits',
  identity: 'participant identity length exceeds limits',
  name: 'name length exceeds limits',
  metadata: 'metadata size exceeds limits',
  attributes: 'attribute size exceeds limits',
  node: 'node has exceeded its configured limit',
} as const;

/** LiveKit's RequestResponse messages for a refused `update_metadata` (participant.go). */
export const UPDATE_LIMIT_MESSAGES = {
  name: 'exceeds name length limit',
  metadata: 'exceeds metadata size limit',
  attributes: 'exceeds attributes size limit',
} as const;

const within = (limit: number, size: number) => limit === 0 || size <= limit;
const bytes = (s: string) => Buffer.byteLength(s, 'utf8');

/** Total bytes of keys and values, as LiveKit's CheckAttributesSize counts them. */
export function attributesSize(attributes: Record<string, string>): number {
  let total = 0;
  for (const [k, v] of Object.entries(attributes)) total += bytes(k) + bytes(v);
  return total;
}

/** Attributes after an update: an empty value deletes the key (LiveKit SetAttributes). */
export function mergeAttributes(current: Record<string, string>, update: Record<string, string>): Record<string, string> {
  const merged = { ...current };
  for (const [k, v] of Object.entries(update)) {
    if (v === '') delete merged[k];
    else merged[k] = v;
  }
  return merged;
}

/** Which of name / metadata / attributes is over its limit, first one found. */
export function participantFieldOverLimit(
  limit: LimitConfig,
  fields: { name?: string | undefined; metadata?: string | undefined; attributes?: Record<string, string> | undefined },
): keyof typeof UPDATE_LIMIT_MESSAGES | undefined {
  if (fields.name !== undefined && !within(limit.max_participant_name_length, bytes(fields.name))) return 'name';
  if (fields.metadata !== undefined && !within(limit.max_metadata_size, bytes(fields.metadata))) return 'metadata';
  if (fields.attributes !== undefined && !within(limit.max_attributes_size, attributesSize(fields.attributes))) {
    return 'attributes';
  }
  return undefined;
}

export function roomNameWithinLimit(limit: LimitConfig, room: string): boolean {
  return within(limit.max_room_name_length, bytes(room));
}

export function identityWithinLimit(limit: LimitConfig, identity: string): boolean {
  return within(limit.max_participant_identity_length, bytes(identity));
}

/** The config key of each participant field's LiveKit limit. */
export const FIELD_LIMIT_KEYS = {
  name: 'limit.max_participant_name_length',
  metadata: 'limit.max_metadata_size',
  attributes: 'limit.max_attributes_size',
} as const;

/** A broken cap: the config key and what was seen. */
export interface CapProblem {
  limit: string;
  detail: string;
}

/**
 * Why an SDP must not reach werift's parser, or undefined when it may. Linear in the text:
 * a 1 MB SDP is scanned in about a millisecond, where werift took 16 s for one.
 */
export function sdpProblem(limits: SignalLimits, sdp: string): CapProblem | undefined {
  if (sdp.length > limits.max_sdp_bytes) {
    return { limit: 'signal_limits.max_sdp_bytes', detail: `SDP of ${sdp.length} bytes (cap ${limits.max_sdp_bytes})` };
  }
  let sections = 0;
  let ssrcLines = 0;
  let at = 0;
  while (at < sdp.length) {
    let end = sdp.indexOf('\n', at);
    if (end < 0) end = sdp.length;
    if (sdp.startsWith('m=', at)) {
      sections++;
      ssrcLines = 0;
      if (sections > limits.max_sdp_media_sections) {
        return { limit: 'signal_limits.max_sdp_media_sections', detail: `SDP with over ${limits.max_sdp_media_sections} m= sections` };
      }
    } else if (sdp.startsWith('a=ssrc', at)) {
      ssrcLines++;
      if (ssrcLines > limits.max_sdp_ssrc_lines_per_section) {
        return {
          limit: 'signal_limits.max_sdp_ssrc_lines_per_section',
          detail: `m= section with over ${limits.max_sdp_ssrc_lines_per_section} a=ssrc lines`,
        };
      }
    }
    at = end + 1;
  }
  return undefined;
}

/**
 * Why an SDP would make werift open more than one transport, or undefined. The SFU runs one ICE
 * transport per peer connection (max-bundle, as LiveKit's clients, Chrome and libwebrtc
 * negotiate): every m= section that is not rejected (port 0) must be in the first
 * `a=group:BUNDLE` (RFC 8843). Without this werift made a transport, with its own UDP socket,
 * for each unbundled section of each offer, and did not close them when the participant left.
 */
export function bundleProblem(sdp: string): CapProblem | undefined {
  let group: Set<string> | undefined;
  const sections: { port: string; mid: string | undefined }[] = [];
  let at = 0;
  while (at < sdp.length) {
    let end = sdp.indexOf('\n', at);
    if (end < 0) end = sdp.length;
    const line = sdp.slice(at, sdp[end - 1] === '\r' ? end - 1 : end);
    if (line.startsWith('m=')) sections.push({ port: line.split(' ')[1] ?? '', mid: undefined });
    else if (line.startsWith('a=mid:') && sections.length) sections[sections.length - 1]!.mid = line.slice(6).trim();
    else if (line.startsWith('a=group:BUNDLE') && !group && !sections.length) group = new Set(line.slice(14).trim().split(/\s+/).filter(Boolean));
    at = end + 1;
  }
  for (const { port, mid } of sections) {
    if (port === '0') continue;
    if (mid === undefined || !group?.has(mid)) {
      return { limit: 'sdp_bundle', detail: `m= section ${mid === undefined ? 'without a=mid' : `"${mid}"`} is not in the SDP's BUNDLE group (the SFU needs max-bundle)` };
    }
  }
  return undefined;
}
