/**
 * Active-speaker detection for one room, from the ssrc-audio-level header extension the media
 * layer accumulates per audio track (`UpstreamTrack.takeAudioLevel`). Every
 * `SPEAKER_INTERVAL_MS` it reads each participant's audio: a participant whose voiced share
 * (packets at most -40 dBov loud) reaches `MIN_ACTIVE_SHARE` is speaking at once; one is
 * quiet again only after `QUIET_INTERVALS` silent readings (no flicker between words). Levels
 * are smoothed (exponential, `LEVEL_SMOOTHING`). Changes go out as SpeakersChanged deltas
 * (LiveKit semantics: `active` false removes a speaker), at most once per interval.
 *
 * Lifecycle: made by the Room, `start()` on construction, `stop()` when the room closes; the
 * room supplies participants and the broadcast through deps (no sockets here).
 */
import { SpeakerInfo, SpeakersChanged, SignalResponse, TrackType } from '@livekit/protocol';
import { repeatEvery, type Clock, type Repeating } from '../../common/clock.ts';
import type { Logger } from '../../common/logger.ts';
import type { Participant } from './participant.ts';

export const SPEAKER_INTERVAL_MS = 200;
export const MIN_ACTIVE_SHARE = 0.4;
export const QUIET_INTERVALS = 4;
export const LEVEL_SMOOTHING = 0.5;
/** A speaking participant's level change smaller than this is not worth a message. */
const LEVEL_STEP = 0.05;

interface SpeakerState {
  level: number;
  sentLevel: number;
  active: boolean;
  quietFor: number;
}

export class SpeakerObserver {
  private readonly participants: () => Iterable<Participant>;
  private readonly broadcast: (msg: SignalResponse) => void;
  private readonly states = new Map<string, SpeakerState>();
  private readonly rounds: Repeating;

  constructor(deps: {
    clock: Clock;
    participants: () => Iterable<Participant>;
    broadcast: (msg: SignalResponse) => void;
    logger: Logger;
  }) {
    this.participants = deps.participants;
    this.broadcast = deps.broadcast;
    this.rounds = repeatEvery(deps.clock, SPEAKER_INTERVAL_MS, () => this.tick(), (err) =>
      deps.logger.warn({ err }, 'active speaker round failed'),
    );
  }

  start(): void {
    this.rounds.start();
  }

  stop(): void {
    this.rounds.stop();
  }

  /** One observation round; public for tests. */
  tick(): void {
    const changes: SpeakerInfo[] = [];
    const seen = new Set<string>();
    for (const p of this.participants()) {
      if (p.isClosed || p.hidden) continue;
      let level = 0;
      let share = 0;
      let hasAudio = false;
      for (const track of p.published.values()) {
        if (track.info.type !== TrackType.AUDIO || track.info.muted) continue;
        hasAudio = true;
        const reading = track.upstream.takeAudioLevel();
        if (reading.activeShare > share) share = reading.activeShare;
        if (reading.level > level) level = reading.level;
      }
      const state = this.states.get(p.sid);
      if (!hasAudio && !state) continue;
      seen.add(p.sid);
      const s = state ?? { level: 0, sentLevel: 0, active: false, quietFor: 0 };
      if (!state) this.states.set(p.sid, s);
      const voiced = share >= MIN_ACTIVE_SHARE;
      s.level = voiced ? s.level + (level - s.level) * LEVEL_SMOOTHING : s.level * (1 - LEVEL_SMOOTHING);
      if (voiced) {
        s.quietFor = 0;
        if (!s.active || Math.abs(s.level - s.sentLevel) >= LEVEL_STEP) {
          s.active = true;
          s.sentLevel = s.level;
          changes.push(new SpeakerInfo({ sid: p.sid, level: s.level, active: true }));
        }
      } else if (s.active && ++s.quietFor >= QUIET_INTERVALS) {
        s.active = false;
        s.sentLevel = 0;
        changes.push(new SpeakerInfo({ sid: p.sid, level: 0, active: false }));
      }
    }
    // Participants gone (or their audio unpublished) stop speaking.
    for (const [sid, s] of this.states) {
      if (seen.has(sid)) continue;
      this.states.delete(sid);
      if (s.active) changes.push(new SpeakerInfo({ sid, level: 0, active: false }));
    }
    if (changes.length === 0) return;
    this.broadcast(
      new SignalResponse({ message: { case: 'speakersChanged', value: new SpeakersChanged({ speakers: changes }) } }),
    );
  }
}
