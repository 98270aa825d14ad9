/**
 * Which simulcast quality a subscriber wants, from its UpdateTrackSettings and the publisher's
 * declared layers (AddTrackRequest.layers, rid q/h/f = LOW/MEDIUM/HIGH), and the dynacast
 * summary of many subscribers. Pure functions of the session layer; the media layer turns the
 * quality into a layer choice per packet.
 */
import { SubscribedCodec, SubscribedQuality, SubscribedQualityUpdate, VideoQuality, type VideoLayer } from '@livekit/protocol';

export interface TrackSettings {
  disabled: boolean;
  width: number;
  height: number;
  quality: VideoQuality;
}

/**
 * The highest quality worth sending for an element of `width`×`height` (adaptive stream): the
 * smallest declared layer covering its area, else the biggest. Without dimensions the
 * requested `quality` counts; without declared layers HIGH (one layer, nothing to choose).
 */
export function maxQualityFor(settings: TrackSettings, layers: readonly VideoLayer[]): VideoQuality {
  if (settings.disabled) return VideoQuality.OFF;
  if (settings.width <= 0 && settings.height <= 0) {
    return settings.quality === VideoQuality.OFF ? VideoQuality.OFF : settings.quality;
  }
  if (layers.length === 0) return VideoQuality.HIGH;
  const sorted = layers.toSorted((a, b) => a.quality - b.quality);
  const wanted = Math.max(1, settings.width) * Math.max(1, settings.height);
  for (const layer of sorted) {
    if (layer.width * layer.height >= wanted) return layer.quality;
  }
  return sorted[sorted.length - 1]!.quality;
}

/** Qualities to keep encoding: every declared one up to the highest any subscriber wants. */
export function subscribedQualities(maxWanted: VideoQuality | undefined): SubscribedQuality[] {
  const out: SubscribedQuality[] = [];
  for (const quality of [VideoQuality.LOW, VideoQuality.MEDIUM, VideoQuality.HIGH]) {
    out.push(new SubscribedQuality({ quality, enabled: maxWanted !== undefined && maxWanted !== VideoQuality.OFF && quality <= maxWanted }));
  }
  return out;
}

/** SubscribedQualityUpdate for one track, both the legacy list and per codec (lowercase). */
export function subscribedQualityUpdate(trackSid: string, mimeType: string, maxWanted: VideoQuality | undefined): SubscribedQualityUpdate {
  const codec = (mimeType.split('/')[1] ?? mimeType).toLowerCase();
  return new SubscribedQualityUpdate({
    trackSid,
    subscribedQualities: subscribedQualities(maxWanted),
    subscribedCodecs: [new SubscribedCodec({ codec, qualities: subscribedQualities(maxWanted) })],
  });
}

/** Highest of the wanted qualities; undefined when nobody wants the track (all OFF or none). */
export function highestWanted(qualities: Iterable<VideoQuality>): VideoQuality | undefined {
  let best: VideoQuality | undefined;
  for (const q of qualities) {
    if (q === VideoQuality.OFF) continue;
    if (best === undefined || q > best) best = q;
  }
  return best;
}
