// Stands in for node:child_process inside the bundle. commander loads it at start-up for
// executable subcommands, which the CLI does not use; loading it costs a few milliseconds of
// every command's start. The real module is loaded on first use.
'use strict';
let real;
module.exports = new Proxy(
  {},
  {
    get(_target, name) {
      real ??= require('node:child_process');
      return real[name];
    },
  },
);
