/**
 * File paths as image formats record them (parent names, extent files, locators): platform-free
 * string work, "/" and "\" both separating, Windows drive letters counted as absolute, since
 * images made on Windows name their files that way.
 */

export function isAbsolutePath(p: string): boolean {
  return p.startsWith("/") || p.startsWith("\\") || /^[A-Za-z]:[\\/]/.test(p);
}

/** The folder part of a path, with its trailing separator ("" when there is none). */
export function dirOf(path: string): string {
  const i = Math.max(path.lastIndexOf("/"), path.lastIndexOf("\\"));
  return i < 0 ? "" : path.slice(0, i + 1);
}

export function baseName(path: string): string {
  return path.slice(dirOf(path).length);
}

/** A file an image names, relative to the image's folder unless absolute. */
export function resolveBeside(imagePath: string, name: string): string {
  return isAbsolutePath(name) ? name : dirOf(imagePath) + name;
}

const splitPath = (p: string): string[] => p.split(/[\\/]+/).filter((s) => s !== "" && s !== ".");

/**
 * `target` relative to the folder of `from` ("./parent.vhd", "../base/parent.vhd"), both paths
 * absolute or both relative to the same folder; `target` as it is when that cannot be said.
 */
export function relativePath(from: string, target: string): string {
  if (isAbsolutePath(from) !== isAbsolutePath(target)) return target;
  const sep = target.includes("\\") && !target.includes("/") ? "\\" : "/";
  const a = splitPath(from).slice(0, -1);
  const b = splitPath(target);
  if (a.includes("..") || b.includes("..")) return target;
  let common = 0;
  while (common < a.length && common < b.length - 1 && a[common] === b[common]) common++;
  const up = a.length - common;
  const rest = b.slice(common);
  return (up === 0 ? ["."] : Array(up).fill("..")).concat(rest).join(sep);
}

/**
 * How an image names a parent file next to it, as qemu writes backing names: the bare name in
 * the same folder, else the path as given (resolveBeside reads both back).
 */
export function nameBeside(imagePath: string, parentPath: string): string {
  return dirOf(imagePath) === dirOf(parentPath) ? baseName(parentPath) : parentPath;
}
