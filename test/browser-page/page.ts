/**
 * The page the browser tests load: the real livekit-client bundled by esbuild, exposed as
 * `window.LivekitClient` so a test can drive it with `page.evaluate`. Test scenarios keep their
 * in-page state on `window.testState`.
 */
import * as LivekitClient from 'livekit-client';

declare global {
  interface Window {
    LivekitClient: typeof LivekitClient;
    testState: Record<string, unknown>;
  }
}

window.LivekitClient = LivekitClient;
window.testState = {};
document.title = `livekit-client ${LivekitClient.version}`;
