/** Waiting for a terminal (node-pty) to print something, for tests that drive the console. */

/** Resolves when `text` shows up in what `get()` returns (polled), or rejects after timeoutMs. */
export function waitForText(get: () => string, text: string | RegExp, timeoutMs: number): Promise<void> {
  const hit = () => (typeof text === "string" ? get().includes(text) : text.test(get()));
  return new Promise((resolve, reject) => {
    const t0 = Date.now();
    const poll = setInterval(() => {
      if (hit()) {
        clearInterval(poll);
        resolve();
      } else if (Date.now() - t0 > timeoutMs) {
        clearInterval(poll);
        reject(new Error(`timed out waiting for ${text}; console so far:\n${get().slice(-4000)}`));
      }
    }, 100);
  });
}
