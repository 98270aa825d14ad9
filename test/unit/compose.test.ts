/**
 * The local-trial deployment (docker-compose.yml, Dockerfile, synapse-dev/) checked without a
 * Docker engine: the compose file is parsed with `yaml` and every reference in it is followed
 * (build context, bind-mounted files, named volumes, depends_on conditions, health checks,
 * published UDP range), the configs that trial-setup generates are loaded by the processes' own
 * config loaders with the compose environment, and the homeserver settings MatrixRTC needs are
 * present and agree with the proxy routes and Element Call's config.
 */
import { spawn, spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readdirSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { beforeAll, describe, expect, it } from 'vitest';
import { parse } from 'yaml';
import { resolveBridgeConfig } from '../../bridge/config.ts';
import { readYamlFile } from '../../common/config.ts';
import { resolveSfuConfig } from '../../sfu/config.ts';
import { TRIAL_DEFAULTS, TRIAL_FILES, writeTrialFiles, type TrialOptions } from '../../synapse-dev/trial-setup.ts';

const root = fileURLToPath(new URL('../..', import.meta.url));
const read = (rel: string): string => readFileSync(join(root, rel), 'utf8');

interface Healthcheck {
  test?: string[];
  disable?: boolean;
}
interface Service {
  image?: string;
  build?: { context: string; dockerfile: string };
  command?: string[];
  entrypoint?: string[];
  environment?: Record<string, string>;
  volumes?: string[];
  ports?: string[];
  depends_on?: Record<string, { condition: string }>;
  healthcheck?: Healthcheck;
  network_mode?: string;
  profiles?: string[];
  networks?: { default?: { aliases?: string[] } };
}
interface Compose {
  services: Record<string, Service>;
  volumes: Record<string, unknown>;
}

const compose = parse(read('docker-compose.yml'), { merge: true }) as Compose;
const services = compose.services;
const dockerfile = read('Dockerfile');
const homeserver = parse(read('synapse-dev/homeserver.yaml')) as Record<string, unknown>;
const caddyfile = read('synapse-dev/Caddyfile');

function service(name: string): Service {
  const s = services[name];
  if (!s) throw new Error(`docker-compose.yml has no service "${name}"`);
  return s;
}

/** `source:target[:ro]` of a service's volumes. */
function mounts(s: Service): { source: string; target: string }[] {
  return (s.volumes ?? []).map((v) => {
    const [source = '', target = ''] = v.split(':');
    return { source, target };
  });
}

/** Maps a path inside a container to the file the test can read (bind mounts, trial volume). */
function hostPathFor(s: Service, containerPath: string, secretsDir: string): string {
  for (const { source, target } of mounts(s)) {
    if (containerPath === target || containerPath.startsWith(`${target}/`)) {
      const rest = containerPath.slice(target.length);
      if (source === 'rtc-secrets') return join(secretsDir, rest);
      if (source.startsWith('./')) return join(root, source, rest);
    }
  }
  if (containerPath.startsWith('/app/')) return join(root, containerPath.slice('/app/'.length));
  throw new Error(`${containerPath} is not mounted into the service`);
}

function trialOptionsFromCompose(): TrialOptions {
  const env = service('trial-setup').environment ?? {};
  return {
    serverName: env.TRIAL_SERVER_NAME ?? TRIAL_DEFAULTS.serverName,
    nodeIp: env.TRIAL_NODE_IP ?? TRIAL_DEFAULTS.nodeIp,
    portRangeStart: Number(env.TRIAL_PORT_RANGE_START ?? TRIAL_DEFAULTS.portRangeStart),
    portRangeEnd: Number(env.TRIAL_PORT_RANGE_END ?? TRIAL_DEFAULTS.portRangeEnd),
    bridgeUrl: env.TRIAL_BRIDGE_URL ?? TRIAL_DEFAULTS.bridgeUrl,
    turnHost: env.TRIAL_TURN_HOST ?? TRIAL_DEFAULTS.turnHost,
  };
}

let secretsDir = '';
beforeAll(() => {
  secretsDir = mkdtempSync(join(tmpdir(), 'trial-secrets-'));
  writeTrialFiles(secretsDir, trialOptionsFromCompose());
});

describe('docker-compose.yml', () => {
  it('runs Synapse, Redis, the bridge, the SFU, coturn and Element Call behind a TLS proxy', () => {
    for (const name of ['synapse', 'redis', 'bridge', 'sfu', 'coturn', 'element-call', 'caddy', 'trial-setup']) {
      expect(services, `service ${name}`).toHaveProperty(name);
    }
  });

  it('gives every service an image, and our build points at the Dockerfile in the repository', () => {
    for (const [name, s] of Object.entries(services)) {
      expect(s.image, `${name}.image`).toMatch(/\S/);
      if (s.build) {
        expect(existsSync(join(root, s.build.context, s.build.dockerfile)), `${name} build`).toBe(true);
      }
    }
    for (const name of ['trial-setup', 'sfu', 'bridge']) expect(service(name).build).toBeDefined();
  });

  it('starts our image only with roles the image dispatches', () => {
    const roles = [...dockerfile.matchAll(/^\s{2}([a-z-]+)\)\s+exec /gm)].map((m) => m[1]);
    expect(roles).toEqual(expect.arrayContaining(['sfu', 'bridge', 'embedded', 'trial-setup']));
    for (const [name, s] of Object.entries(services)) {
      if (!s.build) continue;
      expect(roles, `${name}.command`).toContain(s.command?.[0]);
    }
  });

  it('mounts only files that exist and volumes that are declared', () => {
    for (const [name, s] of Object.entries(services)) {
      for (const { source, target } of mounts(s)) {
        expect(target, `${name} mount target`).toMatch(/^\//);
        if (source.startsWith('./')) {
          expect(existsSync(join(root, source)), `${name}: ${source}`).toBe(true);
          expect(statSync(join(root, source)).isFile(), `${name}: ${source} is a file`).toBe(true);
        } else {
          expect(compose.volumes, `${name}: volume ${source}`).toHaveProperty(source);
        }
      }
    }
  });

  it('waits only on services that can satisfy the condition', () => {
    for (const [name, s] of Object.entries(services)) {
      for (const [dep, { condition }] of Object.entries(s.depends_on ?? {})) {
        const target = service(dep);
        if (condition === 'service_healthy') {
          expect(target.healthcheck?.test, `${name} waits for ${dep} to be healthy`).toBeDefined();
        } else if (condition === 'service_completed_successfully') {
          expect(dep, `${name} waits for ${dep} to finish`).toBe('trial-setup');
        } else expect(condition).toBe('service_started');
      }
    }
  });

  it('publishes port mappings in valid form, the SFU media range identical inside and out', () => {
    for (const [name, s] of Object.entries(services)) {
      for (const p of s.ports ?? []) expect(p, `${name} port`).toMatch(/^\d+(-\d+)?:\d+(-\d+)?\/(tcp|udp)$/);
    }
    const { portRangeStart, portRangeEnd } = trialOptionsFromCompose();
    expect(service('sfu').ports).toContain(`${portRangeStart}-${portRangeEnd}:${portRangeStart}-${portRangeEnd}/udp`);
  });

  it('checks the health of our processes on the ports they listen on', () => {
    expect(dockerfile).toMatch(/HEALTHCHECK .*\n\s+CMD \["matrix-rtc-healthcheck"\]/);
    expect(dockerfile).toContain('/usr/local/bin/matrix-rtc-healthcheck');
    const sfu = resolveSfuConfig({ configFile: hostPathFor(service('sfu'), '/secrets/sfu.yaml', secretsDir) });
    expect(service('sfu').environment?.HEALTHCHECK_URLS).toBe(`http://127.0.0.1:${sfu.port}/healthz`);
    const bridgePort = /:(\d+)$/.exec(service('bridge').environment?.LIVEKIT_JWT_BIND ?? '')?.[1];
    expect(service('bridge').environment?.HEALTHCHECK_URLS).toBe(`http://127.0.0.1:${bridgePort}/healthz`);
    for (const name of ['sfu', 'bridge']) expect(service(name).healthcheck?.test).toEqual(['CMD', 'matrix-rtc-healthcheck']);
    expect(service('caddy').healthcheck?.test?.join(' ')).toContain(
      service('bridge').environment?.NODE_EXTRA_CA_CERTS?.replace('/caddy-data/', '/data/'),
    );
  });

  it('hands the SFU a config its loader accepts, with the published range and the key the bridge uses', () => {
    const sfu = service('sfu');
    const file = hostPathFor(sfu, sfu.command?.[2] ?? '', secretsDir);
    const cfg = resolveSfuConfig({ configFile: file });
    const opts = trialOptionsFromCompose();
    expect([cfg.rtc.port_range_start, cfg.rtc.port_range_end]).toEqual([opts.portRangeStart, opts.portRangeEnd]);
    expect(cfg.rtc.node_ip).toBe('127.0.0.1');
    const turnSecret = readFileSync(join(secretsDir, 'turn.secret'), 'utf8').trim();
    expect(cfg.rtc.turn_servers).toEqual([expect.objectContaining({ host: opts.turnHost, port: 3478, secret: turnSecret })]);

    const bridge = service('bridge');
    const env = Object.fromEntries(
      Object.entries(bridge.environment ?? {}).map(([k, v]) => [k, k.endsWith('_FILE') ? hostPathFor(bridge, v, secretsDir) : v]),
    );
    const bcfg = resolveBridgeConfig(env, hostPathFor(bridge, bridge.command?.[2] ?? '', secretsDir));
    expect(cfg.keys[bcfg.livekit.key]).toBe(bcfg.livekit.secret);
    expect(bcfg.appservice?.serverName).toBe(homeserver.server_name);
    expect(bcfg.bind.port).toBe(8080);
  });

  it('has the SFU post its webhooks to the bridge service\'s /sfu_webhook, signed with the bridge\'s key', () => {
    const sfu = service('sfu');
    const cfg = resolveSfuConfig({ configFile: hostPathFor(sfu, sfu.command?.[2] ?? '', secretsDir) });
    const bridge = service('bridge');
    const env = Object.fromEntries(
      Object.entries(bridge.environment ?? {}).map(([k, v]) => [k, k.endsWith('_FILE') ? hostPathFor(bridge, v, secretsDir) : v]),
    );
    const bcfg = resolveBridgeConfig(env, hostPathFor(bridge, bridge.command?.[2] ?? '', secretsDir));
    expect(cfg.webhook.api_key).toBe(bcfg.livekit.key);
    expect(cfg.webhook.urls).toEqual([`http://bridge:${bcfg.bind.port}/sfu_webhook`]);
    expect(services.bridge).toBeDefined();
    // Nothing turned the bridge's own poll of the SFU off.
    expect(bcfg.sanityCheckIntervalSeconds).toBeGreaterThan(0);
  });

  it('runs a second SFU node under the cluster profile: same keys and Redis, its own published range and address', () => {
    const first = resolveSfuConfig({ configFile: hostPathFor(service('sfu'), service('sfu').command?.[2] ?? '', secretsDir) });
    const s2 = service('sfu-2');
    expect(s2.profiles).toEqual(['cluster']);
    const second = resolveSfuConfig({ configFile: hostPathFor(s2, s2.command?.[2] ?? '', secretsDir) });
    expect(second.keys).toEqual(first.keys);
    expect(second.redis).toEqual(first.redis);
    expect(first.redis.address).toBe(`redis:${6379}`);
    expect(services).toHaveProperty(first.redis.address.split(':')[0] ?? '');
    expect(second.rtc.port_range_start).toBe(first.rtc.port_range_end + 1);
    const range = `${second.rtc.port_range_start}-${second.rtc.port_range_end}`;
    expect(s2.ports).toContain(`${range}:${range}/udp`);
    for (const [name, cfg] of [['sfu', first], ['sfu-2', second]] as const) {
      expect(new URL(cfg.cluster.signal_url).hostname).toBe(name);
      expect(Number(new URL(cfg.cluster.signal_url).port)).toBe(cfg.port);
      expect(service(name).depends_on).toHaveProperty('redis');
    }
  });

  it('keeps secrets it already generated, so a restart does not change tokens', () => {
    const before = TRIAL_FILES.map((f) => readFileSync(join(secretsDir, f), 'utf8'));
    expect(writeTrialFiles(secretsDir, trialOptionsFromCompose())).toEqual([]);
    expect(TRIAL_FILES.map((f) => readFileSync(join(secretsDir, f), 'utf8'))).toEqual(before);
  });

  it('routes every Caddy upstream to a compose service and port, and aliases its names', () => {
    const upstreams = [...caddyfile.matchAll(/reverse_proxy((?:\s+[\w-]+:\d+)+)/g)].flatMap((m) =>
      (m[1] ?? '').trim().split(/\s+/).map((u) => [u.split(':')[0], Number(u.split(':')[1])] as const),
    );
    expect(upstreams.length).toBeGreaterThanOrEqual(4);
    for (const [host] of upstreams) expect(services, `Caddy upstream ${host}`).toHaveProperty(host ?? '');
    expect(upstreams).toContainEqual(['bridge', 8080]);
    expect(upstreams).toContainEqual(['sfu', 7880]);
    expect(upstreams).toContainEqual(['sfu-2', 7880]);
    expect(upstreams).toContainEqual(['synapse', 8008]);
    const sites = [...caddyfile.matchAll(/^([a-z.-]+\.localhost) \{/gm)].map((m) => m[1]);
    expect(service('caddy').networks?.default?.aliases?.toSorted()).toEqual(sites.toSorted());
  });
});

describe('synapse-dev/homeserver.yaml', () => {
  const experimental = homeserver.experimental_features as Record<string, boolean>;

  it('turns on every experimental feature MatrixRTC needs', () => {
    for (const flag of ['msc3266_enabled', 'msc4143_enabled', 'msc4222_enabled', 'msc4502_enabled', 'msc4512_enabled', 'msc4354_enabled']) {
      expect(experimental[flag], flag).toBe(true);
    }
  });

  it('enables delayed events (MSC4140) and the rate limits Element Call needs', () => {
    expect(homeserver.max_event_delay_duration).toBe('24h');
    expect(homeserver.rc_message).toEqual({ per_second: 0.5, burst_count: 30 });
    expect(homeserver.rc_delayed_event_mgmt).toEqual({ per_second: 1, burst_count: 20 });
  });

  it('serves the openid or federation resource, which OpenID token checks use', () => {
    const listeners = homeserver.listeners as { port: number; resources: { names: string[] }[] }[];
    const names = listeners.flatMap((l) => l.resources.flatMap((r) => r.names));
    expect(names.some((n) => n === 'openid' || n === 'federation')).toBe(true);
    expect(listeners.map((l) => l.port)).toContain(8008);
  });

  it('advertises the token service the proxy publishes, on /rtc/transports and in .well-known', () => {
    const url = 'https://rtc.localhost/livekit/jwt';
    expect((homeserver.matrix_rtc as { transports: unknown[] }).transports).toEqual([{ type: 'livekit', livekit_service_url: url }]);
    expect(homeserver.extra_well_known_client_content).toEqual({ 'org.matrix.msc4143.rtc_foci': [{ type: 'livekit', livekit_service_url: url }] });
    expect(homeserver.public_baseurl).toBe('https://synapse.localhost/');
    expect(caddyfile).toMatch(/rtc\.localhost \{[\s\S]*handle_path \/livekit\/jwt\/\* \{\s*reverse_proxy bridge:8080/);
    const ec = JSON.parse(read('synapse-dev/element-call-config.json')) as { livekit: { livekit_service_url: string } };
    expect(ec.livekit.livekit_service_url).toBe(url);
    expect(service('bridge').environment?.LIVEKIT_URL).toBe('wss://rtc.localhost/livekit/sfu');
  });

  it('loads the generated appservice registration with the keys Synapse reads', () => {
    const files = homeserver.app_service_config_files as string[];
    expect(files).toHaveLength(1);
    const reg = readYamlFile(hostPathFor(service('synapse'), files[0] ?? '', secretsDir)) as Record<string, unknown>;
    for (const k of ['id', 'as_token', 'hs_token', 'sender_localpart']) expect(typeof reg[k], k).toBe('string');
    expect(String(reg.as_token)).not.toBe(String(reg.hs_token));
    expect(reg.url).toBe('http://bridge:8080');
    expect(reg['io.element.msc4502.scopes']).toEqual(['urn:matrix:client:io.element.msc4502:rooms:is_joined']);
    expect(reg['io.element.msc4512.proxy_prefix']).toBe('rtc/livekit');
    expect(reg['io.element.msc4512.proxy_url']).toBe('http://bridge:8080');
    const users = (reg.namespaces as { users: { regex: string; exclusive: boolean }[] }).users;
    expect(users).toEqual([{ exclusive: false, regex: expect.any(String) }]);
    // Python re.match: anchored at the start only.
    const re = new RegExp(`^(?:${users[0]?.regex ?? ''})`);
    expect(re.test('@alice:synapse.localhost')).toBe(true);
    expect(re.test('@alice:synapseXlocalhost')).toBe(false);
  });
});

/** The body of a `COPY <<'EOF' target` heredoc in the Dockerfile. */
function heredoc(target: string): string {
  const m = new RegExp(`<<'EOF' ${target.replaceAll('/', '\\/')}\n([\\s\\S]*?)\nEOF\n`).exec(dockerfile);
  if (!m?.[1]) throw new Error(`Dockerfile has no heredoc for ${target}`);
  return m[1];
}

/** Bare-specifier imports (not `import type`) of a TypeScript source. */
function runtimeImports(file: string): string[] {
  return [...readFileSync(file, 'utf8').matchAll(/^import (?!type )[^;]*? from '([^.'][^']*)'/gm)].map((m) => m[1] ?? '');
}

function sourcesUnder(dirs: string[]): string[] {
  return dirs.flatMap((d) =>
    readdirSync(join(root, d), { recursive: true, encoding: 'utf8' })
      .filter((f) => f.endsWith('.ts') && !f.endsWith('.test.ts'))
      .map((f) => join(root, d, f)),
  );
}

describe('Dockerfile', () => {
  it('needs at run time only production dependencies (the image installs with --omit=dev)', () => {
    const pkg = JSON.parse(read('package.json')) as { dependencies: Record<string, string> };
    const copied = [...dockerfile.matchAll(/^COPY (\w[\w-]*) \.\/\1$/gm)].map((m) => m[1] ?? '');
    expect(copied).toEqual(expect.arrayContaining(['common', 'sfu', 'bridge', 'embedded', 'config']));
    for (const file of [...sourcesUnder(copied), join(root, 'synapse-dev/trial-setup.ts')]) {
      for (const spec of runtimeImports(file)) {
        if (spec.startsWith('node:')) continue;
        const name = spec.startsWith('@') ? spec.split('/').slice(0, 2).join('/') : (spec.split('/')[0] ?? '');
        expect(pkg.dependencies, `${file.slice(root.length)} imports ${spec}`).toHaveProperty([name]);
      }
    }
  });

  it('dispatches roles to the process entry points (run here with /app = this repository)', () => {
    const script = join(mkdtempSync(join(tmpdir(), 'entry-')), 'matrix-rtc');
    writeFileSync(script, heredoc('/usr/local/bin/matrix-rtc').replaceAll('/app/', `${root}/`));
    const cfg = join(secretsDir, 'sfu.yaml');
    const env = { ...process.env, MATRIX_RTC_DATA_DIR: mkdtempSync(join(tmpdir(), 'entry-data-')) };
    const run = (...args: string[]) => spawnSync('sh', [script, ...args], { encoding: 'utf8', env, timeout: 30_000 });
    const sfu = run('sfu', '--config', cfg, '--validate');
    expect(sfu.stdout + sfu.stderr).toContain('sfu: configuration is valid');
    expect(sfu.status).toBe(0);
    const bridge = run('bridge', '--validate');
    expect(bridge.stderr).toContain('LIVEKIT_URL: required');
    expect(bridge.status).toBe(1);
    const embedded = run('embedded', '--validate');
    expect(embedded.stdout).toContain('embedded: configuration is valid');
    expect(embedded.status).toBe(0);
    const unknown = run('livekit-server');
    expect(unknown.stderr).toContain('unknown role: livekit-server');
    expect(unknown.status).toBe(2);
  });

  it('health-checks with a script that passes on any 2xx /healthz and fails when nothing answers', async () => {
    const script = join(mkdtempSync(join(tmpdir(), 'hc-')), 'healthcheck.cjs');
    writeFileSync(script, heredoc('/usr/local/bin/matrix-rtc-healthcheck').replace(/^#!.*\n/, ''));
    const server = createServer((req, res) => {
      res.writeHead(req.url === '/healthz' ? 200 : 404);
      res.end();
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    const port = (server.address() as AddressInfo).port;
    try {
      const check = (urls: string) =>
        new Promise<number | null>((resolve) => {
          const child = spawn(process.execPath, [script], { env: { ...process.env, HEALTHCHECK_URLS: urls }, stdio: 'ignore' });
          child.once('exit', (code) => resolve(code));
        });
      expect(await check(`http://127.0.0.1:${port}/healthz`)).toBe(0);
      expect(await check(`http://127.0.0.1:${port}/nothing`)).toBe(1);
      await new Promise<void>((resolve) => server.close(() => resolve()));
      expect(await check(`http://127.0.0.1:${port}/healthz`)).toBe(1);
    } finally {
      server.close();
    }
  });

  it('builds on Node 24 slim in stages, runs as a non-root user and copies only what exists', () => {
    expect(dockerfile).toMatch(/^ARG NODE_IMAGE=node:24-slim$/m);
    expect(dockerfile.match(/^FROM /gm)?.length).toBeGreaterThanOrEqual(2);
    expect(dockerfile).toMatch(/^USER node$/m);
    expect(dockerfile).toContain('npm ci --omit=dev');
    const ignore = read('.dockerignore');
    for (const m of dockerfile.matchAll(/^COPY (?!--from|--chmod)(.+) \S+$/gm)) {
      for (const src of (m[1] ?? '').split(' ')) {
        expect(existsSync(join(root, src)), `COPY ${src}`).toBe(true);
        expect(ignore, `.dockerignore lets ${src} in`).toContain(`!${src.replace(/\/?$/, src.includes('.') ? '' : '/')}`);
      }
    }
  });
});
