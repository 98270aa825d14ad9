/**
 * Subscriber feedback: which sequence numbers a generic NACK
 * really asks for (werift's parser reads past the packet and does not wrap at 16 bits).
 */
import { describe, expect, it } from 'vitest';
import { GenericNack, RtcpHeader } from 'werift';
import { nackedSequenceNumbers } from './sender-feedback.ts';

const nack = (lost: number[], length?: number) =>
  new GenericNack({ senderSsrc: 1, mediaSourceSsrc: 2, lost, ...(length !== undefined ? { header: new RtcpHeader({ length }) } : {}) });

describe('nackedSequenceNumbers', () => {
  it.each([
    ['one FCI entry, garbage after it ignored', nack([100, 36814, 36815, 0, 1], 3), [100]],
    ['one entry with its bitmask', nack([100, 101, 103, 116, 5000], 3), [100, 101, 103, 116]],
    ['two entries', nack([100, 102, 300, 301, 9], 4), [100, 102, 300, 301]],
    ['wraps pid + n at 16 bits', nack([65535, 65536, 65537], 3), [65535, 0, 1]],
    ['no header: everything', nack([7, 9000]), [7, 9000]],
  ])('%s', (_name, packet, expected) => {
    expect(nackedSequenceNumbers(packet)).toEqual(expected);
  });
});
