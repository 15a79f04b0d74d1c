export { type Config, readConfig } from './config/read.js';
export { createApp } from './http/app.js';
export { Conductor } from './service/local.js';
