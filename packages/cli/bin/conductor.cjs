#!/usr/bin/env node
// The installed command: one bundled file, built by `pnpm run build` (see build.mjs).
"use strict";
require("../dist/conductor.cjs");
