export { createApp } from './http/app.js';
export { Conductor } from './service/local.js';
export { readConfig, type Config } from './config/read.js';
