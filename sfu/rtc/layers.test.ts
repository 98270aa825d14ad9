/**
 * Quality choice from adaptive-stream settings and the dynacast state machine (manual clock):
 * raising is immediate, lowering waits, nobody subscribed turns every layer off.
 */
import { describe, expect, it } from 'vitest';
import { VideoLayer, VideoQuality } from '@livekit/protocol';
import { createManualClock } from '../../common/clock.ts';
import { highestWanted, maxQualityFor, subscribedQualityUpdate } from './layers.ts';
import { DYNACAST_DOWN_DELAY_MS, DynacastState } from './dynacast.ts';

const LAYERS_720 = [
  new VideoLayer({ quality: VideoQuality.HIGH, width: 1280, height: 720 }),
  new VideoLayer({ quality: VideoQuality.LOW, width: 320, height: 180 }),
  new VideoLayer({ quality: VideoQuality.MEDIUM, width: 640, height: 360 }),
];

const s = (width: number, height: number, quality = VideoQuality.HIGH, disabled = false) => ({ width, height, quality, disabled });

describe('maxQualityFor', () => {
  it.each([
    ['a thumbnail gets the low layer', s(160, 90), LAYERS_720, VideoQuality.LOW],
    ['exactly the low size', s(320, 180), LAYERS_720, VideoQuality.LOW],
    ['just above low', s(330, 186), LAYERS_720, VideoQuality.MEDIUM],
    ['a full-size element gets high', s(1280, 720), LAYERS_720, VideoQuality.HIGH],
    ['bigger than any layer: the biggest', s(2560, 1440), LAYERS_720, VideoQuality.HIGH],
    ['portrait element compares area', s(180, 320), LAYERS_720, VideoQuality.LOW],
    ['no dimensions: the requested quality', s(0, 0, VideoQuality.MEDIUM), LAYERS_720, VideoQuality.MEDIUM],
    ['disabled', s(1280, 720, VideoQuality.HIGH, true), LAYERS_720, VideoQuality.OFF],
    ['no declared layers', s(100, 100), [], VideoQuality.HIGH],
  ])('%s', (_name, settings, layers, expected) => {
    expect(maxQualityFor(settings, layers)).toBe(expected);
  });
});

describe('subscribedQualityUpdate', () => {
  it('enables every quality up to the highest wanted, in both the legacy and the per-codec list', () => {
    const update = subscribedQualityUpdate('TR_V1', 'video/VP8', VideoQuality.MEDIUM);
    expect(update.subscribedQualities.map((q) => [q.quality, q.enabled])).toEqual([
      [VideoQuality.LOW, true],
      [VideoQuality.MEDIUM, true],
      [VideoQuality.HIGH, false],
    ]);
    expect(update.subscribedCodecs[0]!.codec).toBe('vp8');
    expect(update.subscribedCodecs[0]!.qualities.map((q) => q.enabled)).toEqual([true, true, false]);
  });

  it('turns everything off when nobody wants the track', () => {
    expect(subscribedQualityUpdate('TR_V1', 'video/VP8', undefined).subscribedQualities.every((q) => !q.enabled)).toBe(true);
    expect(highestWanted([VideoQuality.OFF])).toBeUndefined();
    expect(highestWanted([VideoQuality.LOW, VideoQuality.HIGH, VideoQuality.OFF])).toBe(VideoQuality.HIGH);
  });
});

describe('DynacastState', () => {
  function setup() {
    const clock = createManualClock();
    const sent: (VideoQuality | undefined)[] = [];
    const state = new DynacastState({ clock, send: (q) => sent.push(q) });
    return { clock, sent, state };
  }

  it('sends the first value and every raise at once', () => {
    const { sent, state } = setup();
    state.update(VideoQuality.LOW);
    state.update(VideoQuality.HIGH);
    expect(sent).toEqual([VideoQuality.LOW, VideoQuality.HIGH]);
  });

  it('lowers only after the delay, and not at all when raised again meanwhile', () => {
    const { clock, sent, state } = setup();
    state.update(VideoQuality.HIGH);
    state.update(VideoQuality.LOW);
    clock.advance(DYNACAST_DOWN_DELAY_MS - 1);
    expect(sent).toEqual([VideoQuality.HIGH]);
    state.update(VideoQuality.HIGH);
    clock.advance(DYNACAST_DOWN_DELAY_MS * 2);
    expect(sent).toEqual([VideoQuality.HIGH]);
    state.update(undefined);
    clock.advance(DYNACAST_DOWN_DELAY_MS);
    expect(sent).toEqual([VideoQuality.HIGH, undefined]);
  });

  it('sends nothing after close', () => {
    const { clock, sent, state } = setup();
    state.update(VideoQuality.HIGH);
    state.update(VideoQuality.LOW);
    state.close();
    clock.advance(DYNACAST_DOWN_DELAY_MS * 2);
    state.update(VideoQuality.HIGH);
    expect(sent).toEqual([VideoQuality.HIGH]);
  });
});
