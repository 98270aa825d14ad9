/** Every fuzz target, in the order `npm run fuzz` runs them. */
import type { FuzzTarget } from '../target.ts';
import { appserviceEvents } from './appservice-events.ts';
import { rtpForward } from './rtp-forward.ts';
import { signalFrame } from './signal-frame.ts';
import { tokenBody } from './token-body.ts';
import { twirpBody } from './twirp-body.ts';

export const TARGETS: FuzzTarget<never>[] = [tokenBody, appserviceEvents, twirpBody, signalFrame, rtpForward] as FuzzTarget<never>[];
