// The licence texts of the packages inside a bundle, from esbuild's metafile: an installable
// package that carries other packages' code carries their licences too (scripts/pack.sh).
import { readdir, readFile } from 'node:fs/promises';
import { join, resolve } from 'node:path';

/** The folder of the package a bundled file came from, or undefined for the workspace's own code. */
function packageRoot(base, input) {
  const parts = resolve(base, input).split('/');
  const at = parts.lastIndexOf('node_modules');
  if (at < 0) return undefined;
  const take = parts[at + 1]?.startsWith('@') ? 3 : 2;
  return parts.slice(0, at + take).join('/');
}

/**
 * One text naming each package the bundle holds (name, version, licence) with its licence files.
 * `base` is the folder esbuild ran in (the metafile's paths are relative to it).
 */
export async function thirdPartyLicenses(metafile, base, what) {
  const roots = new Set();
  for (const input of Object.keys(metafile.inputs)) {
    const root = packageRoot(base, input);
    if (root !== undefined) roots.add(root);
  }
  const sections = [];
  for (const root of [...roots].sort()) {
    const manifest = JSON.parse(await readFile(join(root, 'package.json'), 'utf8'));
    const names = (await readdir(root)).filter((name) => /^(licen[cs]e|copying|notice)/i.test(name)).sort();
    const texts = await Promise.all(names.map((name) => readFile(join(root, name), 'utf8')));
    const licence = typeof manifest.license === 'string' ? manifest.license : 'see its text';
    const heading = `${manifest.name} ${manifest.version} (${licence})`;
    sections.push(
      [heading, ...(texts.length > 0 ? texts : ['(the package has no licence file)'])].join('\n\n').trimEnd(),
    );
  }
  const rule = `\n\n${'-'.repeat(72)}\n\n`;
  return `${what} holds these packages, each under its licence:\n\n${sections.join(rule)}\n`;
}
