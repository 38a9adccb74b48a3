import { defineConfig } from "vitest/config";

// Guest tests boot Linux in v86: one file at a time (CI has two cores), generous timeouts,
// and the emulator's Node flag (see cli/startvm.ts) for the worker processes.
export default defineConfig({
  test: {
    include: ["guest-tests/**/*.test.ts"],
    fileParallelism: false,
    pool: "forks",
    execArgv: ["--v8-pool-size=1"],
    testTimeout: 600_000,
    hookTimeout: 600_000,
  },
});
