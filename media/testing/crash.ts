/**
 * A write cut short at every request it makes: the shared loop of the allocation crash tests.
 */
import { expect } from "vitest";
import { MediumError } from "../block.js";
import { FaultControl } from "../io/fault-io.js";
import { allZero, firstDiff } from "../formats/vdi/test-support.js";

interface Session {
  close(): Promise<void>;
}

/**
 * For k = 0 .. requests-1: `open` a `fresh` copy of the image's file(s) through `control`, let k
 * more requests through, then `write`. The write succeeds or fails with a MediumError; after a
 * close (which may fail too), `verify` looks at what the crash left in the copy. Some k must let
 * the whole write through, or `requests` is too small to reach the end.
 */
export async function crashAtEveryRequest<F, I extends Session>(options: {
  requests: number;
  fresh: () => F;
  open: (files: F, control: FaultControl) => Promise<I>;
  write: (img: I) => Promise<void>;
  verify: (files: F, wrote: boolean) => Promise<void>;
}): Promise<void> {
  let completed = 0;
  for (let k = 0; k < options.requests; k++) {
    const files = options.fresh();
    const control = new FaultControl();
    const img = await options.open(files, control);
    control.dieAfter(control.counts.total + k);
    const wrote = await options.write(img).then(
      () => true,
      (e: unknown) => {
        expect(e).toBeInstanceOf(MediumError);
        return false;
      },
    );
    if (wrote) completed++;
    await img.close().catch(() => undefined);
    await options.verify(files, wrote);
  }
  expect(completed).toBeGreaterThan(0);
}

/** A piece of a cut-short write reads as written, or (if the write failed) zeros as before it. */
export function expectWrittenOrZero(got: Uint8Array, want: Uint8Array, wrote: boolean): void {
  if (wrote) expect(firstDiff(got, want)).toBe(-1);
  else expect(allZero(got) || firstDiff(got, want) === -1).toBe(true);
}
