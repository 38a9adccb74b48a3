/**
 * VBoxManage-style arguments: positional words and `--option value` / `--flag` pairs.
 */
export class UsageError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "UsageError";
  }
}

export interface ParsedArgs {
  positional: string[];
  options: Map<string, string | true>;
}

/** `flags` are options that take no value. */
export function parseArgs(argv: string[], flags: readonly string[] = []): ParsedArgs {
  const positional: string[] = [];
  const options = new Map<string, string | true>();
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    if (!a.startsWith("--")) {
      positional.push(a);
      continue;
    }
    const eq = a.indexOf("=");
    const name = eq > 0 ? a.slice(2, eq) : a.slice(2);
    if (eq > 0) options.set(name, a.slice(eq + 1));
    else if (flags.includes(name)) options.set(name, true);
    else {
      const v = argv[++i];
      if (v === undefined) throw new UsageError(`--${name} needs a value`);
      options.set(name, v);
    }
  }
  return { positional, options };
}

export function optString(args: ParsedArgs, name: string): string | undefined {
  const v = args.options.get(name);
  if (v === true) throw new UsageError(`--${name} needs a value`);
  return v;
}

export function optNumber(args: ParsedArgs, name: string): number | undefined {
  const v = optString(args, name);
  if (v === undefined) return undefined;
  const n = Number(v);
  if (!Number.isFinite(n) || n < 0) throw new UsageError(`--${name} must be a non-negative number, not '${v}'`);
  return n;
}

export function requireOpt(args: ParsedArgs, name: string): string {
  const v = optString(args, name);
  if (v === undefined) throw new UsageError(`--${name} is required`);
  return v;
}

/** Refuse options the verb does not know, so a typo is never silently ignored. */
export function allowOnly(args: ParsedArgs, known: readonly string[]): void {
  for (const k of args.options.keys()) if (!known.includes(k)) throw new UsageError(`unknown option --${k}`);
}
