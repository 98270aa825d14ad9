/**
 * The pure limit checks: LiveKit's Check* rules (bytes, 0 = no limit, attributes counted as keys
 * plus values), the SDP pre-check that runs before werift's parser, and the trickle parser of
 * the signal guard, table-driven.
 */
import { describe, expect, it } from 'vitest';
import { TrickleRequest } from '@livekit/protocol';
import { createManualClock } from '../../common/clock.ts';
import { createSilentLogger } from '../../common/logger.ts';
import { defaultSfuConfig } from '../config.ts';
import { attributesSize, bundleProblem, mergeAttributes, participantFieldOverLimit, roomNameWithinLimit, sdpProblem } from './limits.ts';
import { SignalGuard } from './signal-guard.ts';

const defaults = defaultSfuConfig();
const section = (ssrcs: number) => `m=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=mid:0\r\n${'a=ssrc:1 cname:c\r\n'.repeat(ssrcs)}`;

describe('limits', () => {
  it("counts sizes in UTF-8 bytes and treats 0 as no limit, as LiveKit's LimitConfig", () => {
    const limit = { ...defaults.limit, max_room_name_length: 4 };
    expect(roomNameWithinLimit(limit, 'abcd')).toBe(true);
    expect(roomNameWithinLimit(limit, 'abcé')).toBe(false);
    expect(roomNameWithinLimit({ ...limit, max_room_name_length: 0 }, 'x'.repeat(10_000))).toBe(true);
    expect(attributesSize({ ab: 'cd', é: '' })).toBe(6);
  });

  it.each([
    [{ name: 'x'.repeat(9) }, 'name'],
    [{ metadata: 'x'.repeat(17) }, 'metadata'],
    [{ attributes: { k: 'x'.repeat(16) } }, 'attributes'],
    [{ name: 'x'.repeat(8), metadata: 'x'.repeat(16), attributes: { k: 'x'.repeat(15) } }, undefined],
  ] as const)('finds the field over its limit in %j', (fields, expected) => {
    const limit = { ...defaults.limit, max_participant_name_length: 8, max_metadata_size: 16, max_attributes_size: 16 };
    expect(participantFieldOverLimit(limit, fields)).toBe(expected);
  });

  it('merges attribute updates as LiveKit stores them (an empty value deletes)', () => {
    expect(mergeAttributes({ a: '1', b: '2' }, { b: '', c: '3' })).toEqual({ a: '1', c: '3' });
  });

  it.each([
    ['a small offer', `v=0\r\n${section(4)}${section(4)}`, undefined],
    ['too many bytes', `v=0\r\na=x:${'y'.repeat(2000)}\r\n`, /max_sdp_bytes/],
    ['too many m= sections', `v=0\r\n${section(0).repeat(4)}`, /max_sdp_media_sections/],
    ['too many a=ssrc lines in one section', `v=0\r\n${section(5)}`, /max_sdp_ssrc_lines_per_section/],
    ['a=ssrc lines spread over sections', `v=0\r\n${section(4)}${section(4)}${section(4)}`, undefined],
    ['bare \\n line ends', `v=0\n${section(5).replace(/\r\n/g, '\n')}`, /max_sdp_ssrc_lines_per_section/],
  ])('checks an SDP with %s', (_what, sdp, expected) => {
    const limits = { ...defaults.signal_limits, max_sdp_bytes: 1024, max_sdp_media_sections: 3, max_sdp_ssrc_lines_per_section: 4 };
    const problem = sdpProblem(limits, sdp)?.limit;
    if (expected) expect(problem).toMatch(expected);
    else expect(problem).toBeUndefined();
  });

  it.each([
    ['null', undefined],
    ['[]', undefined],
    ['"text"', undefined],
    ['{"candidate": 5}', undefined],
    ['{"candidate": "c", "sdpMLineIndex": "0"}', undefined],
    ['{not json', undefined],
    ['{"candidate": ""}', undefined],
    ['{"candidate": "candidate:1 1 udp 1 127.0.0.1 9 typ host", "sdpMid": "0"}', 'candidate:1 1 udp 1 127.0.0.1 9 typ host'],
  ])('parses the trickled candidate %s defensively', (candidateInit, expected) => {
    const guard = new SignalGuard({ limits: defaults.signal_limits, clock: createManualClock(), logger: createSilentLogger() });
    expect(guard.trickle(new TrickleRequest({ candidateInit }))?.init.candidate).toBe(expected);
  });
});

const m = (media: string, port: number, mid?: string) => `m=${media} ${port} UDP/TLS/RTP/SAVPF 96\r\n${mid === undefined ? '' : `a=mid:${mid}\r\n`}`;

describe('bundleProblem', () => {
  it.each([
    ['every section in the BUNDLE group', `v=0\r\na=group:BUNDLE 0 1 2\r\n${m('audio', 9, '0')}${m('video', 9, '1')}${m('application', 9, '2')}`, undefined],
    ['a rejected (port 0) section outside the group', `v=0\r\na=group:BUNDLE 0\r\n${m('audio', 9, '0')}${m('video', 0, '1')}`, undefined],
    ['no m= sections', 'v=0\r\n', undefined],
    ['no BUNDLE group', `v=0\r\n${m('audio', 9, '0')}${m('video', 9, '1')}`, /not in the SDP's BUNDLE group/],
    ['a section left out of the group', `v=0\r\na=group:BUNDLE 0\r\n${m('audio', 9, '0')}${m('video', 9, '1')}`, /"1" is not in/],
    ['a section without a=mid', `v=0\r\na=group:BUNDLE 0\r\n${m('audio', 9)}`, /without a=mid/],
    ['bare \\n line ends', `v=0\na=group:BUNDLE 0\n${m('audio', 9, '0').replace(/\r\n/g, '\n')}`, undefined],
  ])('%s', (_what, sdp, expected) => {
    const problem = bundleProblem(sdp)?.detail;
    if (expected) expect(problem).toMatch(expected);
    else expect(problem).toBeUndefined();
  });
});
