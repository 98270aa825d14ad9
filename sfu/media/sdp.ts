/**
 * The little SDP reading the transport needs before handing an offer to werift: per m-line
 * the mid, kind, msid track id, direction and whether it was rejected (port 0). werift fires
 * `onTrack` inside `setRemoteDescription`, so the mid → msid mapping must be known first.
 */

export interface MediaSection {
  kind: string;
  mid: string;
  /** Track id part of `a=msid:<stream> <track>`; '' when absent. */
  msidTrackId: string;
  msidStreamId: string;
  direction: 'sendrecv' | 'sendonly' | 'recvonly' | 'inactive';
  rejected: boolean;
}

export function parseMediaSections(sdp: string): MediaSection[] {
  const sections: MediaSection[] = [];
  let current: MediaSection | undefined;
  for (const raw of sdp.split(/\r?\n/)) {
    const line = raw.trim();
    if (line.startsWith('m=')) {
      const [kind = '', port = '0'] = line.slice(2).split(' ');
      current = {
        kind,
        mid: '',
        msidTrackId: '',
        msidStreamId: '',
        direction: 'sendrecv',
        rejected: port === '0',
      };
      sections.push(current);
      continue;
    }
    if (!current) continue;
    if (line.startsWith('a=mid:')) current.mid = line.slice(6);
    else if (line.startsWith('a=msid:')) {
      const [stream = '', track = ''] = line.slice(7).split(' ');
      current.msidStreamId = stream;
      current.msidTrackId = track;
    } else if (line === 'a=sendrecv' || line === 'a=sendonly' || line === 'a=recvonly' || line === 'a=inactive') {
      current.direction = line.slice(2) as MediaSection['direction'];
    }
  }
  return sections;
}

/** Whether the remote side sends media on this section. */
export function remoteSends(section: MediaSection): boolean {
  return !section.rejected && (section.direction === 'sendonly' || section.direction === 'sendrecv');
}
