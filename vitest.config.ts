import { defineConfig } from "vitest/config";

// Unit and interop tests: fast, parallel. Guest tests (booting Linux in v86) have their own
// config in guest-tests/ because they run one at a time on CI's two cores.
export default defineConfig({
  test: {
    include: ["{host-adapter,devices,media,machine,cli,tools}/**/*.test.ts"],
    testTimeout: 30_000,
  },
});
