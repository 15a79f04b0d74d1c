#!/usr/bin/env node
// The installed command: one bundled file, built by `pnpm run build` (see build.mjs).
import "../dist/bundle/conductor.mjs";
