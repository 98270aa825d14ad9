/** Every fuzz target, in the order `npm run fuzz` runs them. */
import type { FuzzTarget } from '../target.ts';
import { appserviceEvents } from './appservice-events.ts';
import { mediaPort } from './media-port.ts';
import { rtpForward } from './rtp-forward.ts';
import { sdp } from './sdp.ts';
import { signalFrame } from './signal-frame.ts';
import { tokenBody } from './token-body.ts';
import { twirpBody } from './twirp-body.ts';

export const TARGETS: FuzzTarget<never>[] = [tokenBody, appserviceEvents, twirpBody, signalFrame, sdp, rtpForward, mediaPort] as FuzzTarget<never>[];
