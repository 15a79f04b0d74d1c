#!/usr/bin/env -S node --max-semi-space-size=2
// The installed command; the code is compiled into dist/ by `pnpm run build`. The small young
// generation keeps the resident memory of this long-running process low (it holds few objects
// that live long, and bursts of requests would otherwise leave a large young generation touched).
import '../dist/main.js';
