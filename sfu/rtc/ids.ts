/**
 * Branded ids of the session layer and the one function that makes each. Formats follow
 * LiveKit (protocol utils/guid): a prefix and 12 base57 characters; track sids carry the kind
 * and source letters (`TR_VC…` = video camera). Clients check only the `PA_`/`TR_` prefixes.
 */
import { randomInt } from 'node:crypto';
import { TrackSource, TrackType } from '@livekit/protocol';

export type RoomName = string & { readonly __brand: 'RoomName' };
export type RoomSid = string & { readonly __brand: 'RoomSid' };
export type ParticipantIdentity = string & { readonly __brand: 'ParticipantIdentity' };
export type ParticipantSid = string & { readonly __brand: 'ParticipantSid' };
export type TrackSid = string & { readonly __brand: 'TrackSid' };

const BASE57 = '23456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz';

function randomId(length = 12): string {
  let out = '';
  for (let i = 0; i < length; i++) out += BASE57[randomInt(BASE57.length)];
  return out;
}

export const asRoomName = (s: string): RoomName => s as RoomName;
export const asIdentity = (s: string): ParticipantIdentity => s as ParticipantIdentity;

export function newRoomSid(): RoomSid {
  return `RM_${randomId()}` as RoomSid;
}

export function newParticipantSid(): ParticipantSid {
  return `PA_${randomId()}` as ParticipantSid;
}

const SOURCE_LETTER: Partial<Record<TrackSource, string>> = {
  [TrackSource.CAMERA]: 'C',
  [TrackSource.MICROPHONE]: 'M',
  [TrackSource.SCREEN_SHARE]: 'S',
  [TrackSource.SCREEN_SHARE_AUDIO]: 's',
};

export function newTrackSid(type: TrackType, source: TrackSource): TrackSid {
  const kind = type === TrackType.VIDEO ? 'V' : type === TrackType.AUDIO ? 'A' : 'D';
  return `TR_${kind}${SOURCE_LETTER[source] ?? 'U'}${randomId()}` as TrackSid;
}
