#!/usr/bin/env node
// The installed command; the code is compiled into dist/ by `pnpm run build`.
import "../dist/main.js";
