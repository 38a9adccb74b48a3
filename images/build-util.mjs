// Shared helpers of the image build scripts: logging, running host programs, hashing, and
// installing the host packages a step needs.

import { spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';

export const ENV = { ...process.env, DEBIAN_FRONTEND: 'noninteractive', LC_ALL: 'C' };
const T0 = Date.now();
export function log(msg) {
  console.log(`[images ${((Date.now() - T0) / 1000).toFixed(1).padStart(5)}s] ${msg}`);
}
export function fail(msg) {
  console.error(`images/build.mjs: error: ${msg}`);
  process.exit(1);
}

export function run(cmd, args, opts = {}) {
  const r = spawnSync(cmd, args, { env: ENV, encoding: 'utf8', maxBuffer: 256 << 20, ...opts });
  if (r.error) return { status: 127, stdout: '', stderr: String(r.error.message) };
  return r;
}
export function runOrFail(cmd, args, opts = {}) {
  const r = run(cmd, args, opts);
  if (r.status !== 0) fail(`${cmd} ${args.join(' ')} failed (${r.status}):\n${(r.stderr || '') + (r.stdout || '')}`);
  return r.stdout;
}
export function have(cmd) {
  return run('sh', ['-c', `command -v ${cmd}`]).status === 0;
}

export function sha256(data) {
  return createHash('sha256').update(data).digest('hex');
}

// ---------------------------------------------------------------------------
// Host packages (only installed when a step actually needs them)

let hostAptUpdated = false;
export function aptInstallHost(pkgs) {
  if (process.getuid && process.getuid() !== 0) fail(`missing host packages (${pkgs.join(' ')}); install them as root`);
  log(`installing host packages: ${pkgs.join(' ')}`);
  let r = run('apt-get', ['install', '-y', '--no-install-recommends', ...pkgs]);
  if (r.status !== 0 && !hostAptUpdated) {
    hostAptUpdated = true;
    run('apt-get', ['update']); // exit code not trusted: one stale index must not stop us
    r = run('apt-get', ['install', '-y', '--no-install-recommends', ...pkgs]);
  }
  if (r.status !== 0) fail(`apt-get install ${pkgs.join(' ')} failed:\n${r.stderr}`);
}


// Versions of the installed host packages; a missing one maps to null.
export function hostPackageVersions(names) {
  const r = run('dpkg-query', ['-W', '-f', '${Package} ${db:Status-Status} ${Version}\\n', ...names]);
  const out = Object.fromEntries(names.map((n) => [n, null]));
  for (const line of (r.stdout || '').split('\n')) {
    const [name, status, version] = line.split(' ');
    if (name in out && status === 'installed') out[name] = version;
  }
  return out;
}
